"""What does breaking a bond cost, with the potential and with the reference? Rigid scans
of bond lengths from a molecule's start geometry, energies side by side.

    python benchmarks/dissociation_scan.py learn-X/final.pt CH3CH2SH 2-3 1-2
    python benchmarks/dissociation_scan.py POT md1000.traj 2-3      # the trajectory's first frame

For each pair i-j (atoms numbered from 0) atom j alone is moved along the bond to 1.5 ...
8 A; printed per distance: potential / reference energy (eV) above the start geometry.
A potential trained on thermal frames of one molecule can end a dissociation far below the
reference (session 14 of issue 26: ethanethiol's S-H 0.24 eV against GFN2-xTB's 4.05).
"""

import argparse

import numpy as np
from ase.build import molecule
from ase.calculators.calculator import CalculationFailed
from ase.io import read

from tfn_md import TFNCalculator
from tfn_md.learn.reference import reference_factory

DISTANCES = (1.5, 1.8, 2.1, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 8.0)  # A


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("potential")
    p.add_argument("structure", help="an ase.build.molecule name or a file (its first frame)")
    p.add_argument("pairs", nargs="+", help="i-j")
    p.add_argument("--reference", default="GFN2-xTB")
    args = p.parse_args()
    try:
        start = molecule(args.structure)
    except KeyError:
        start = read(args.structure, 0)
    calc = TFNCalculator(args.potential, compile=False)
    make = reference_factory(args.reference, "", {})
    for pair in args.pairs:
        i, j = map(int, pair.split("-"))
        bond = start.positions[j] - start.positions[i]
        d0 = float(np.linalg.norm(bond))
        rows = []
        for d in (d0, *DISTANCES):
            a = start.copy()
            a.positions[j] = a.positions[i] + bond / d0 * d
            a.calc = calc
            e_pot = a.get_potential_energy()
            a.calc = make(args.reference)
            try:
                e_ref = a.get_potential_energy()
            except CalculationFailed:  # e.g. an SCF that does not converge
                e_ref = float("nan")
            rows.append((d, e_pot, e_ref))
        s = start.get_chemical_symbols()
        print(f"{s[i]}{i}-{s[j]}{j} (distance A: potential / {args.reference}, eV): "
              + "  ".join(f"{d:.1f}: {e - rows[0][1]:.2f} / {r - rows[0][2]:.2f}"
                          for d, e, r in rows))


if __name__ == "__main__":
    main()
