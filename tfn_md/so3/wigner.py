"""Wigner D matrices of the real basis of :mod:`tfn_md.so3.harmonics`.

The Lie-algebra generators J_k (k = x, y, z) of the real irrep l are the
matrices with  d/dθ Y_l(R_k(θ) r)|_{θ=0} = J_k Y_l(r),  where
R_k(θ) = exp(θ L_k) rotates about axis k and (L_k)_{ij} = -ε_{kij}
(so L_k r = e_k × r). They are real, antisymmetric and satisfy
[J_x, J_y] = J_z (cyclic). For a rotation R = exp(ω · L) (rotation vector ω)
the Wigner matrix is D_l(R) = exp(ω · J), shape [2l+1, 2l+1], orthogonal,
and Y_l(R r) = D_l(R) Y_l(r).
"""

from functools import cache

import numpy as np
import torch
from torch import Tensor

from .harmonics import sh_slice, spherical_harmonics

__all__ = ["rotation_vector", "so3_generators", "wigner_D"]


@cache
def _generators_f64(l: int) -> Tensor:
    """[3, 2l+1, 2l+1] float64, solved by least squares from the harmonics' derivatives."""
    rng = np.random.default_rng(1234 + l)  # a local generator: no global seed touched
    pts = torch.as_tensor(rng.standard_normal((max(64, 8 * (2 * l + 1)), 3)))
    pts = pts / pts.norm(dim=1, keepdim=True)
    y = spherical_harmonics(pts, l)[:, sh_slice(l)]  # [n, 2l+1]
    eye = torch.eye(3, dtype=torch.float64)
    gens = []
    for k in range(3):
        tangent = torch.cross(eye[k].expand_as(pts), pts, dim=1)  # e_k x r
        _, dy = torch.func.jvp(lambda p: spherical_harmonics(p, l)[:, sh_slice(l)], (pts,), (tangent,))
        # dy^T = J y^T  ->  y J^T = dy
        jt = torch.linalg.lstsq(y, dy).solution
        gens.append(jt.T)
    return torch.stack(gens)


def so3_generators(l: int, dtype=torch.float64, device=None) -> Tensor:
    """Generators J_x, J_y, J_z of the real irrep l: [3, 2l+1, 2l+1]."""
    return _generators_f64(l).to(dtype=dtype, device=device)


def rotation_vector(rotation: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> rotation vectors ω [..., 3] with R = exp(ω · L)."""
    from scipy.spatial.transform import Rotation

    flat = rotation.detach().cpu().reshape(-1, 3, 3).to(torch.float64).numpy()
    rv = Rotation.from_matrix(flat).as_rotvec()
    return torch.as_tensor(rv, dtype=rotation.dtype, device=rotation.device).reshape(
        rotation.shape[:-2] + (3,)
    )


def wigner_D(l: int, rotation: Tensor) -> Tensor:
    """D_l(R) for rotation matrices [..., 3, 3] -> [..., 2l+1, 2l+1] (same dtype).

    Satisfies Y_l(R r) = D_l(R) Y_l(r); for l = 1, D_1(R) = P R P^T with P the
    permutation (x, y, z) -> (y, z, x).
    """
    omega = rotation_vector(rotation).to(torch.float64)  # [..., 3]
    gens = _generators_f64(l)
    d = torch.linalg.matrix_exp(torch.einsum("...k,kij->...ij", omega, gens))
    return d.to(dtype=rotation.dtype, device=rotation.device)


def random_rotation(n: int | None = None, dtype=torch.float64, seed: int | None = None) -> Tensor:
    """Haar-random rotation matrices [n, 3, 3] (or [3, 3] if n is None)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((1 if n is None else n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    det = np.linalg.det(q)
    q[det < 0, :, 0] *= -1
    out = torch.as_tensor(q, dtype=dtype)
    return out[0] if n is None else out


__all__.append("random_rotation")
