"""Short-range repulsion: priors that keep atoms apart where the learned energy has no data.

ZBL screened nuclear repulsion (Ziegler, Biersack, Littmark 1985), optional (``zbl``):

    E_rep = 1/2 sum_{i != j} (k_e Z_i Z_j / r_ij) phi(r_ij / a_ij) u(r_ij / r_cov,ij),
    a_ij  = 0.8854 a_0 / (Z_i^0.23 + Z_j^0.23),
    phi(x) = 0.1818 e^{-3.2 x} + 0.5099 e^{-0.9423 x} + 0.2802 e^{-0.4029 x} + 0.02817 e^{-0.2016 x}

k_e = e^2 / (4 pi eps_0) = 14.399645 eV A, a_0 = 0.529177 A; u is the smooth
polynomial envelope, switched off at r_cov,ij, the sum of the two covalent radii
(ASE's), so the term acts only inside bonding distances and leaves bonded
geometries to the learned part. Returned per edge [E] (each pair appears twice
in a full neighbour list, hence the 1/2).

The wall (``wall``; on for potentials trained by ``tfn-md train``) acts where the data is
silent, not only inside covalent radii. With r_in the shortest distance of the species
pair in the training data (set by the trainer from :func:`tfn_md.data.loader.shortest_distances`; the holes a
learned energy falls into lie below it, e.g. methyl hydrogens at 0.8-0.9 A where the data has them no closer
than 1.5 A),

    E_wall = 1/2 sum_{i != j} eps (r_in / r_ij - 1)^3   for r_ij < r_in,  0 beyond,

eps = 30 eV: zero with its first two derivatives at r_in (so zero on every training
structure: it costs no accuracy on the data, and training does not see it), 4 meV at
0.95 r_in, 0.47 eV at 0.8 r_in, 9 eV at 0.6 r_in (the depth of the holes found in
ethanol-gfn2), growing as r^-3 at the core. A pair with r_in = 0 has no wall.
"""

import torch
from ase.data import covalent_radii
from torch import Tensor

from .radial import polynomial_envelope

__all__ = ["WALL_EPS", "wall_pair_energy", "zbl_pair_energy"]

KE = 14.399645  # eV A
A0 = 0.529177  # A
COEFFS = (0.1818, 0.5099, 0.2802, 0.02817)
EXPONENTS = (3.2, 0.9423, 0.4029, 0.2016)
WALL_EPS = 30.0  # eV


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


def wall_pair_energy(r: Tensor, r_in: Tensor) -> Tensor:
    """Half the wall energy of each directed edge [E] (eV); r, r_in [E] in A."""
    inside = r < r_in
    x = torch.where(inside, r_in / torch.where(inside, r, r_in) - 1.0, torch.zeros_like(r))
    return 0.5 * WALL_EPS * x**3

