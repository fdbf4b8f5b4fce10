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
CHARGES: Final[str] = "charges"  # per-atom charges [n] (e)
ATOM_DIPOLES: Final[str] = "atom_dipoles"  # per-atom dipoles of a dipole head [n, 3] (e*A)
# uncertainty (tfn_md.inference.uncertainty): shallow ensemble (TFNConfig.energy_heads =
# K > 1) and the energy's prediction rigidity (TFNConfig.llpr)
ENERGIES_HEADS: Final[str] = "energies_heads"  # per-atom energy of each head [n_atoms, K]
ENERGY_HEADS: Final[str] = "energy_heads"  # energy of each head [n_graphs, K] (model output)
ENERGY_SPREAD: Final[str] = "energy_spread"  # the energy uncertainty, eV (calculator)
FORCES_SPREAD: Final[str] = "forces_spread"  # per-atom force spread [n_atoms] eV/A (calculator)
READOUT_INPUTS: Final[str] = "readout_inputs"  # l = 0 features the heads read [n_atoms, c]
FORCES_HEADS: Final[str] = "forces_heads"  # forces of each head [K, n_atoms, 3] eV/A

NUMBERS: Final[str] = "numbers"
POSITIONS: Final[str] = "positions"
CELL: Final[str] = "cell"
PBC: Final[str] = "pbc"
