"""Relax atoms and cell of fcc copper with the shipped cu-emt potential
(ase.filters.FrechetCellFilter) and compare the lattice constant with EMT's own.

    python examples/relax_cu_cell.py [--quick]
"""

import argparse

from ase.build import bulk
from ase.calculators.emt import EMT

from tfn_md import TFNCalculator
from tfn_md.ase.md import relax

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="(runs the same: it is fast)")
args = parser.parse_args()


def lattice_constant(calc) -> float:
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.02, seed=0)
    atoms.calc = calc
    assert relax(atoms, fmax=1e-3, cell=True), "relaxation did not converge"
    return atoms.cell.cellpar()[0] / 2


a_tfn = lattice_constant(TFNCalculator("cu-emt", dtype="float64"))
a_emt = lattice_constant(EMT())
print(f"lattice constant: TFN {a_tfn:.4f} A, EMT {a_emt:.4f} A, "
      f"difference {abs(a_tfn - a_emt):.4f} A")
