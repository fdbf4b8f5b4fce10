"""Real Clebsch-Gordan coefficients of the basis of :mod:`tfn_md.so3.harmonics`.

C^{l1 l2 l3} is the tensor [2l1+1, 2l2+1, 2l3+1] that couples l1 ⊗ l2 -> l3:

    sum_{m1 m2} C[m1, m2, m3] (D_l1 u)_m1 (D_l2 v)_m2 = sum_m3' D_l3[m3, m3'] (sum C[m1, m2, m3'] u_m1 v_m2)

for every rotation (the intertwining property). It is non-zero exactly when
|l1 - l2| <= l3 <= l1 + l2 and unique up to a scalar; it is computed as the
common null space of G_k = J_k ⊗ 1 ⊗ 1 + 1 ⊗ J_k ⊗ 1 + 1 ⊗ 1 ⊗ J_k (the tensor
invariant under D_l1 ⊗ D_l2 ⊗ D_l3, which for real orthogonal D is the
intertwiner), normalised to unit Frobenius norm (as e3nn's ``wigner_3j``), with
the sign fixed so that its first entry larger than 1e-6 in magnitude is positive.
Computed once per (l1, l2, l3) in float64 and cached.
"""

from functools import cache

import torch
from torch import Tensor

from .wigner import _generators_f64

__all__ = ["clebsch_gordan"]


@cache
def _cg_f64(l1: int, l2: int, l3: int) -> Tensor:
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(f"(l1, l2, l3) = ({l1}, {l2}, {l3}) violates the triangle rule")
    g1, g2, g3 = _generators_f64(l1), _generators_f64(l2), _generators_f64(l3)
    d1, d2, d3 = 2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1
    i1, i2, i3 = (torch.eye(d, dtype=torch.float64) for d in (d1, d2, d3))
    rows = [
        torch.kron(torch.kron(g1[k], i2), i3)
        + torch.kron(torch.kron(i1, g2[k]), i3)
        + torch.kron(torch.kron(i1, i2), g3[k])
        for k in range(3)
    ]
    # null space of the stacked generators = kernel of the PSD Casimir sum_k G_k^T G_k
    # (eigh is robust to the heavily repeated spectrum, where SVD may not converge)
    casimir = sum(g.T @ g for g in rows)
    evals, evecs = torch.linalg.eigh(casimir)
    c = evecs[:, 0]
    if (len(evals) > 1 and evals[1] < 1e-6) or abs(evals[0]) > 1e-9:
        raise RuntimeError(f"CG null space of ({l1},{l2},{l3}) is not one-dimensional: {evals[:2]}")
    c = torch.where(c.abs() < 1e-13, torch.zeros_like(c), c)
    first = c[c.abs() > 1e-6][0]
    c = c * torch.sign(first) / c.norm()
    return c.reshape(d1, d2, d3)


def clebsch_gordan(l1: int, l2: int, l3: int, dtype=torch.float64, device=None) -> Tensor:
    """Real CG tensor [2l1+1, 2l2+1, 2l3+1] coupling l1 ⊗ l2 -> l3 (unit Frobenius norm)."""
    return _cg_f64(l1, l2, l3).to(dtype=dtype, device=device)
