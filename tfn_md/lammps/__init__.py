"""TFN potentials in LAMMPS (ML-IAP unified): :mod:`tfn_md.lammps.mliap` (the model LAMMPS
loads, and its export), :mod:`tfn_md.lammps.local_program` (a rank's step as one compiled
program), :mod:`tfn_md.lammps.cli` (``tfn-md export-lammps``)."""

from .mliap import DEFAULT_SKIN, TFNMLIAP, export_lammps, lammps_lines

# .mliap files pickle the class by this path (tfn_md.lammps.TFNMLIAP): keep it stable
TFNMLIAP.__module__ = __name__

__all__ = ["DEFAULT_SKIN", "TFNMLIAP", "export_lammps", "lammps_lines"]
