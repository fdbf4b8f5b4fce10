"""Did a molecule's bonds survive an MD run? Bond graphs of every frame against the first.

    python examples/md_ethanol.py --steps 200000 --temperature 800 --out md800
    python benchmarks/bond_check.py md800.traj

A bond: two atoms closer than FACTOR x the sum of ASE's covalent radii (1.2 and 1.3).
Printed per factor: frames that miss a bond of the first frame (and the longest run of
consecutive such frames), frames with a bond the first frame lacks, whether the last
frame has the first frame's bonds; then the largest distance of each kind of bond and
the closest pair of atoms not bonded in the first frame (a collapse shows here).
"""

import argparse

import numpy as np
from ase.data import covalent_radii
from ase.io import read


def bonds(atoms, factor: float) -> np.ndarray:
    radii = covalent_radii[atoms.numbers]
    graph = atoms.get_all_distances() < factor * (radii[:, None] + radii[None, :])
    np.fill_diagonal(graph, False)
    return graph


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trajectory")
    args = parser.parse_args()
    frames = read(args.trajectory, ":")
    first = frames[0]
    for factor in (1.2, 1.3):
        start = bonds(first, factor)
        missing = formed = run = longest = 0
        for atoms in frames:
            graph = bonds(atoms, factor)
            lost = bool((start & ~graph).any())
            missing += lost
            formed += bool((graph & ~start).any())
            run = run + 1 if lost else 0
            longest = max(longest, run)
        same = bool((bonds(frames[-1], factor) == start).all())
        print(f"{factor} x covalent radii: {len(frames)} frames, {missing} miss a bond of the "
              f"first (longest run {longest} frames), {formed} with a new bond; last frame "
              f"has the first frame's bonds: {same}")
    start = bonds(first, 1.2)
    symbols = first.get_chemical_symbols()
    largest, closest = {}, np.inf
    for atoms in frames:
        d = atoms.get_all_distances()
        for i, j in zip(*np.triu_indices(len(atoms), 1)):
            if start[i, j]:
                kind = "-".join(sorted((symbols[i], symbols[j])))
                largest[kind] = max(largest.get(kind, 0.0), d[i, j])
            else:
                closest = min(closest, d[i, j])
    print("largest bonded distances (A):",
          ", ".join(f"{k} {v:.2f}" for k, v in sorted(largest.items())),
          f"; closest pair not bonded at the start: {closest:.2f} A")


if __name__ == "__main__":
    main()
