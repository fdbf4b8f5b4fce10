"""SO(3) mathematics: real spherical harmonics, Clebsch-Gordan coefficients, Wigner D."""

from .cartesian import l2_to_matrix, matrix_to_l2
from .clebsch_gordan import clebsch_gordan
from .harmonics import sh_dim, sh_slice, spherical_harmonics
from .wigner import random_rotation, rotation_vector, so3_generators, wigner_D

__all__ = [
    "clebsch_gordan",
    "l2_to_matrix",
    "matrix_to_l2",
    "random_rotation",
    "rotation_vector",
    "sh_dim",
    "sh_slice",
    "so3_generators",
    "spherical_harmonics",
    "wigner_D",
]
