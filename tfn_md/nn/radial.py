"""Radial part of the TFN filter: R^(path)_c(r) = u(r) * MLP(B(r)).

* :class:`GaussianBasis`  - the paper's basis, B_j(r) = exp(-g (r - mu_j)^2),
  mu_j = linspace(low, high, n), g = n / (high - low); no cutoff (all pairs).
* :class:`BesselBasis`    - B_j(r) = sqrt(2/r_c) sin(j pi r / r_c) / r, j = 1..n,
  finite at r = 0 (written with sinc).
* :func:`polynomial_envelope` - u(x), x = r / r_c: the smooth cutoff of
  DimeNet (order p): u(1) = u'(1) = u''(1) = 0, u = 0 beyond r_c, so filters,
  energies and forces go to zero continuously at the cutoff.
* :class:`RadialMLP` - channel-wise radial functions: one hidden layer
  (the paper's R_c(r) = sum_h W_ch NL(sum_j W_hj B_j(r) + b_h) + b_c), one
  output per (path, channel). Shapes: r [n_edges] -> [n_edges, n_paths, channels].
"""

import math

import torch
from torch import Tensor, nn

__all__ = ["BesselBasis", "GaussianBasis", "RadialMLP", "polynomial_envelope"]


class GaussianBasis(nn.Module):
    """exp(-g (r - mu_j)^2), mu_j evenly spaced in [low, high], g = n / (high - low)."""

    def __init__(self, n: int, low: float = 0.0, high: float = 5.0):
        super().__init__()
        self.register_buffer("centers", torch.linspace(low, high, n))
        self.gamma = n / (high - low)
        self.n = n

    def forward(self, r: Tensor) -> Tensor:  # [E] -> [E, n]
        return torch.exp(-self.gamma * (r[:, None] - self.centers) ** 2)


class BesselBasis(nn.Module):
    """sqrt(2/r_c) sin(j pi r / r_c) / r for j = 1..n (value at r = 0: its limit)."""

    def __init__(self, n: int, cutoff: float):
        super().__init__()
        self.register_buffer("freq", torch.arange(1, n + 1, dtype=torch.float64))
        self.cutoff = cutoff
        self.n = n

    def forward(self, r: Tensor) -> Tensor:  # [E] -> [E, n]
        k = self.freq.to(r.dtype)
        pref = math.sqrt(2.0 / self.cutoff) * math.pi / self.cutoff
        return pref * k * torch.sinc(k * r[:, None] / self.cutoff)


def polynomial_envelope(r: Tensor, cutoff: float, p: int = 6) -> Tensor:
    """u(r/r_c) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), 0 for x >= 1. [E]"""
    x = r / cutoff
    u = (
        1.0
        - 0.5 * (p + 1) * (p + 2) * x**p
        + p * (p + 2) * x ** (p + 1)
        - 0.5 * p * (p + 1) * x ** (p + 2)
    )
    return torch.where(x < 1.0, u, torch.zeros_like(u))


class RadialMLP(nn.Module):
    """B(r) [E, n_basis] -> R [E, n_paths, channels] (one hidden layer, SiLU)."""

    def __init__(self, n_basis: int, hidden: int, n_paths: int, channels: int):
        super().__init__()
        self.n_paths, self.channels = n_paths, channels
        self.hidden = nn.Linear(n_basis, hidden)
        self.out = nn.Linear(hidden, n_paths * channels)
        self.act = nn.SiLU()

    def forward(self, basis: Tensor) -> Tensor:
        h = self.act(self.hidden(basis))  # [E, hidden]
        return self.out(h).view(-1, self.n_paths, self.channels)  # [E, P, c]
