"""TFN potentials in ASE: :mod:`tfn_md.ase.calculator` (``TFNCalculator``),
:mod:`tfn_md.ase.md` (MD and relaxation drivers), :mod:`tfn_md.ase.cli` (``tfn-md md``,
``tfn-md relax``)."""

from .calculator import TFNCalculator

__all__ = ["TFNCalculator"]
