"""Radial functions tabulated for inference: cubic Hermite splines of R(r) = u(r) MLP(B(r)).

After training, each convolution's radial functions [P c] depend on the edge length alone,
so they can be sampled once on a uniform grid r_k = k h, k = 0..N (h = r_c / N), with
their exact derivatives, and evaluated by cubic Hermite interpolation (as ML-PACE does
for ACE). On interval k, with t = r / h - k in [0, 1),

    R(r) = a0 + a1 t + a2 t^2 + a3 t^3,
    a0 = f_k,  a1 = h f'_k,  a2 = 3 (f_k+1 - f_k) - h (2 f'_k + f'_k+1),
    a3 = 2 (f_k - f_k+1) + h (f'_k + f'_k+1),

which matches value and slope at both ends (C^1 across intervals); the error is
O(h^4) in R and O(h^3) in dR/dr. Only radial parts change, so the layer stays exactly
equivariant, and the kernel differentiates the spline itself, so forces are the exact
derivative of the tabulated energy (NVE conserves it). Beyond the last interval R = 0
(the kernel appends a zero row: :class:`tfn_md.nn.edge_kernel.TableRadial`).
"""

import math

import torch
from torch import Tensor

from .edge_kernel import TableRadial

__all__ = ["hermite_coefficients", "sample_radial", "tabulate"]

DEFAULT_INTERVALS = 1024
MAX_INTERVALS = 1 << 15
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def sample_radial(fn, r: Tensor) -> tuple[Tensor, Tensor]:
    """(R(r) [N, P c], dR/dr [N, P c]) of ``fn``: r [N] -> [N, P c] (row i depends on r_i
    alone), by forward-mode autodiff."""
    with torch.no_grad():
        return torch.func.jvp(fn, (r,), (torch.ones_like(r),))


def hermite_coefficients(f: Tensor, df: Tensor, h: float) -> Tensor:
    """Values and slopes at N + 1 grid points [N + 1, P c] -> coefficients [N, 4, P c]."""
    f0, f1, d0, d1 = f[:-1], f[1:], h * df[:-1], h * df[1:]
    return torch.stack([f0, d0, 3 * (f1 - f0) - 2 * d0 - d1, 2 * (f0 - f1) + d0 + d1], dim=1)


def tabulate(fn, cutoff: float, tol: float = 1e-7, n_intervals: int = DEFAULT_INTERVALS
             ) -> tuple[Tensor, float, float] | None:
    """Tabulate ``fn`` (float64, r [N] -> [N, P c]) on [0, cutoff]: the coarsest grid of
    ``n_intervals`` x 2^k intervals whose spline deviates from ``fn`` by at most ``tol``
    relative to max |R| in value and to max |dR/dr| in slope, checked at 4096 radii spread
    over [0, cutoff) by the golden ratio (deterministic, never on a grid point).
    Returns (coefficients [N, 4, P c] float64, h, achieved relative error), or None where
    even MAX_INTERVALS intervals miss ``tol``."""
    probe = torch.frac(torch.arange(1, 4097, dtype=torch.float64) * GOLDEN) * cutoff
    f_true, df_true = sample_radial(fn, probe)
    scale_f = f_true.abs().max().clamp_min(1e-300)
    scale_df = df_true.abs().max().clamp_min(1e-300)
    n = n_intervals
    while n <= MAX_INTERVALS:
        h = cutoff / n
        grid = torch.arange(n + 1, dtype=torch.float64) * h
        coef = hermite_coefficients(*sample_radial(fn, grid), h)
        spline = TableRadial(1.0 / h)
        f, df = spline.weights((probe,), (coef,)), spline.slopes((probe,), (coef,))
        err = max(float((f - f_true).abs().max() / scale_f),
                  float((df - df_true).abs().max() / scale_df))
        if err <= tol or not math.isfinite(err):
            return (coef, h, err) if math.isfinite(err) else None
        n *= 2
    return None
