"""ZBL screened nuclear repulsion (Ziegler, Biersack, Littmark 1985): an optional
physical prior that keeps atoms from collapsing onto each other.

    E_rep = 1/2 sum_{i != j} (k_e Z_i Z_j / r_ij) phi(r_ij / a_ij) u(r_ij / r_cov,ij),
    a_ij  = 0.8854 a_0 / (Z_i^0.23 + Z_j^0.23),
    phi(x) = 0.1818 e^{-3.2 x} + 0.5099 e^{-0.9423 x} + 0.2802 e^{-0.4029 x} + 0.02817 e^{-0.2016 x}

k_e = e^2 / (4 pi eps_0) = 14.399645 eV A, a_0 = 0.529177 A; u is the smooth
polynomial envelope, switched off at r_cov,ij, the sum of the two covalent radii
(ASE's), so the term acts only inside bonding distances and leaves bonded
geometries to the learned part. Returned per edge [E] (each pair appears twice
in a full neighbour list, hence the 1/2).
"""

import torch
from ase.data import covalent_radii
from torch import Tensor

from .radial import polynomial_envelope

__all__ = ["zbl_pair_energy"]

KE = 14.399645  # eV A
A0 = 0.529177  # A
COEFFS = (0.1818, 0.5099, 0.2802, 0.02817)
EXPONENTS = (3.2, 0.9423, 0.4029, 0.2016)


def zbl_pair_energy(numbers_i: Tensor, numbers_j: Tensor, r: Tensor) -> Tensor:
    """Half the ZBL energy of each directed edge [E] (eV); atomic numbers [E], r [E] in A."""
    radii = torch.as_tensor(covalent_radii, dtype=r.dtype, device=r.device)
    r_cov = radii[numbers_i] + radii[numbers_j]
    envelope = polynomial_envelope(r / r_cov, 1.0)
    z_i, z_j = numbers_i.to(r.dtype), numbers_j.to(r.dtype)
    a = 0.8854 * A0 / (z_i**0.23 + z_j**0.23)
    x = r / a
    phi = sum(c * torch.exp(-e * x) for c, e in zip(COEFFS, EXPONENTS))
    return 0.5 * KE * z_i * z_j / r * phi * envelope
