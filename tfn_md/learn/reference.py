"""The reference method that labels frames: tblite (GFN2-xTB, ...) or any ASE calculator
named ``module:Class`` with keyword arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from .. import keys
from ..data.sources import reference_factory  # also importable from here, as before

__all__ = ["label", "reference_factory"]


def label(atoms: Atoms, make: Callable[[str], Any], method: str = "") -> Atoms:
    """A copy of ``atoms`` (info kept) with the reference energy, forces (and stress for a
    fully periodic cell) attached as a SinglePointCalculator; a fresh calculator per frame
    so labels never depend on history. Where the reference's calculation also gave them
    (GFN2-xTB through tblite does), the dipole [3] (e*A; not for periodic cells, where it
    is not defined) and the atomic charges [n] (e) are kept too, at no extra cost.
    Non-finite labels raise ValueError."""
    work = atoms.copy()
    work.calc = make(method)
    results = {keys.ENERGY: work.get_potential_energy(), keys.FORCES: work.get_forces()}
    if work.pbc.all():
        results[keys.STRESS] = work.get_stress()
    computed = getattr(work.calc, "results", None) or {}
    for name in (keys.DIPOLE, keys.CHARGES):
        if name in computed and not (name == keys.DIPOLE and work.pbc.any()):
            results[name] = np.array(computed[name], dtype=float)
    for name, value in results.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"the reference returned a non-finite {name} for a frame "
                             f"({atoms.get_chemical_formula()})")
    record = atoms.copy()
    record.info = dict(atoms.info)
    record.calc = SinglePointCalculator(record, **results)
    return record
