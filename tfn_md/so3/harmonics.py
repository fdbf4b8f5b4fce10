"""Real spherical harmonics Y_l(r_hat) for l = 0..l_max, batched and autograd-safe.

Convention (documented once, used everywhere in tfn_md):

* polar axis z, components ordered m = -l..l, index ``l*l + l + m`` in the
  concatenated output of width ``(l_max + 1)**2``;
* m > 0:  Y_lm ∝ P_l^m(cos θ) cos(m φ),  m < 0:  Y_lm ∝ P_l^|m|(cos θ) sin(|m| φ),
  no Condon-Shortley phase, so that Y_1 = sqrt(3) * (y, z, x) / r;
* "component" normalisation: sum_m Y_lm(r_hat)^2 = 2l + 1 for every direction.

They are evaluated as solid harmonics (homogeneous polynomials of degree l in
x, y, z) of the unit vector: no division by sin θ, hence finite and smooth
along ±z; a zero vector gives Y_0 = 1 and Y_l = 0 for l > 0 (the value the
paper's all-pairs mode needs for the self-pair), with zero gradient.

Relation to e3nn (checked in tests/so3/test_so3.py): e3nn's polar axis is y, and
with ``normalization="component"``
``Y_tfn_l(x, y, z) = e3nn.o3.spherical_harmonics(l, (y, z, x))``; that is, the
two bases agree after the cyclic change of coordinates (x, y, z) -> (y, z, x),
with no further signs.
"""

import math

import torch
from torch import Tensor

__all__ = ["sh_dim", "sh_slice", "spherical_harmonics"]


def sh_dim(l_max: int) -> int:
    """Width (l_max + 1)^2 of the concatenated harmonics Y_0 .. Y_lmax."""
    return (l_max + 1) ** 2


def sh_slice(l: int) -> slice:
    """Columns of Y_l in the concatenated output."""
    return slice(l * l, (l + 1) * (l + 1))


def _safe_normalize(vectors: Tensor) -> Tensor:
    """r / |r| with 0 -> 0 and finite gradients everywhere. [..., 3]"""
    sq = (vectors * vectors).sum(-1, keepdim=True)
    nonzero = sq > 0
    norm = torch.sqrt(torch.where(nonzero, sq, torch.ones_like(sq)))
    return torch.where(nonzero, vectors / norm, torch.zeros_like(vectors))


def spherical_harmonics(vectors: Tensor, l_max: int, normalize: bool = True) -> Tensor:
    """Real spherical harmonics of ``vectors`` [..., 3] -> [..., (l_max+1)^2].

    With ``normalize=False`` the result is the solid harmonic |r|^l Y_l(r_hat)
    (a polynomial in the components). Equivariance: Y_l(R r) = D_l(R) Y_l(r)
    with D_l from :func:`tfn_md.so3.wigner_D`.
    """
    if l_max < 0:
        raise ValueError(f"l_max must be >= 0, got {l_max}")
    r = _safe_normalize(vectors) if normalize else vectors
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    r2 = x * x + y * y + z * z
    # A_m + i B_m = (x + i y)^m
    a = [torch.ones_like(x)]
    b = [torch.zeros_like(x)]
    for m in range(l_max):
        a.append(x * a[m] - y * b[m])
        b.append(x * b[m] + y * a[m])
    # q[l][m] = r^(l-m) d^m P_l / dz^m evaluated homogeneously (solid-harmonic recursion)
    q = [[None] * (l_max + 1) for _ in range(l_max + 1)]
    for m in range(l_max + 1):
        q[m][m] = torch.full_like(x, float(math.prod(range(1, 2 * m, 2))))  # (2m-1)!!
        if m + 1 <= l_max:
            q[m + 1][m] = (2 * m + 1) * z * q[m][m]
        for l in range(m + 2, l_max + 1):
            q[l][m] = ((2 * l - 1) * z * q[l - 1][m] - (l + m - 1) * r2 * q[l - 2][m]) / (l - m)
    out = []
    for l in range(l_max + 1):
        comps = [None] * (2 * l + 1)
        comps[l] = math.sqrt(2 * l + 1) * q[l][0]
        for m in range(1, l + 1):
            c = math.sqrt(2 * (2 * l + 1) * math.factorial(l - m) / math.factorial(l + m))
            comps[l + m] = c * q[l][m] * a[m]
            comps[l - m] = c * q[l][m] * b[m]
        out.extend(comps)
    return torch.stack(out, dim=-1)
