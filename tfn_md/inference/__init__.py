"""Evaluating a trained potential: :mod:`~tfn_md.inference.engine` (the choice of route
for each call), :mod:`~tfn_md.inference.response` (energy, forces and stress by
autograd), :mod:`~tfn_md.inference.compiled` (the whole response as one compiled
program), :mod:`~tfn_md.inference.chunks` (the edge kernel's chunks compiled, for large
systems), :mod:`~tfn_md.inference.programs` (trace, compile, check and cache programs;
also used by LAMMPS), :mod:`~tfn_md.inference.uncertainty` (the spreads of an ensemble of
heads). Nothing here imports the ASE or LAMMPS front ends."""
