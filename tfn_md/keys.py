"""Field names used across tfn_md, in one place.

Result names are exactly ASE's (``energy``, ``free_energy``, ``energies``,
``forces``, ``stress``); the per-atom vector output of the model is ``vectors``.
"""

from typing import Final

ENERGY: Final[str] = "energy"
FREE_ENERGY: Final[str] = "free_energy"
ENERGIES: Final[str] = "energies"  # per-atom energies [n_atoms]
FORCES: Final[str] = "forces"  # [n_atoms, 3] eV/A
STRESS: Final[str] = "stress"  # ASE Voigt [6] eV/A^3 (xx, yy, zz, yz, xz, xy)
VECTORS: Final[str] = "vectors"  # per-atom l=1 readout [n_atoms, 3]
TENSORS: Final[str] = "tensors"  # per-atom l=0+l=2 readout, symmetric [n_atoms, 3, 3]
DIPOLE: Final[str] = "dipole"  # per-structure vector [3]

NUMBERS: Final[str] = "numbers"
POSITIONS: Final[str] = "positions"
CELL: Final[str] = "cell"
PBC: Final[str] = "pbc"
