"""Cartesian forms of the l = 1 and l = 2 irreps in the basis of :mod:`.harmonics`.

* l = 1: components (y, z, x) -> the vector (x, y, z).
* l = 2: five components y_m -> the symmetric traceless matrix T = sum_m y_m B_m,
  with B fixed by  Y_2(r_hat) -> r_hat r_hat^T - I/3  (the same map for every
  unit vector). It intertwines: T(D_2(R) y) = R T(y) R^T, shape [..., 3, 3].
"""

from functools import cache

import numpy as np
import torch
from torch import Tensor

from .harmonics import sh_slice, spherical_harmonics

__all__ = ["l2_to_matrix", "matrix_to_l2"]


@cache
def _l2_basis() -> Tensor:
    """B [5, 3, 3] float64 with sum_m Y_2m(r) B_m = r r^T - I/3 for unit r."""
    r = torch.as_tensor(np.random.default_rng(2).standard_normal((64, 3)))  # local generator
    r = r / r.norm(dim=1, keepdim=True)
    y = spherical_harmonics(r, 2)[:, sh_slice(2)]  # [N, 5]
    t = r[:, :, None] * r[:, None, :] - torch.eye(3, dtype=torch.float64) / 3  # [N, 3, 3]
    return torch.linalg.lstsq(y, t.reshape(-1, 9)).solution.reshape(5, 3, 3)


def l2_to_matrix(y: Tensor) -> Tensor:
    """l = 2 components [..., 5] -> symmetric traceless matrices [..., 3, 3]."""
    return torch.einsum("...m,mij->...ij", y, _l2_basis().to(y.dtype).to(y.device))


def matrix_to_l2(t: Tensor) -> Tensor:
    """Symmetric matrices [..., 3, 3] -> l = 2 components [..., 5] of their traceless part."""
    b = _l2_basis().to(t.dtype).to(t.device).reshape(5, 9)
    # B_m are orthogonal with equal norms: y_m = <T, B_m> / |B_m|^2
    return t.reshape(*t.shape[:-2], 9) @ b.T / (b * b).sum(1)
