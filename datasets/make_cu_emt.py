"""Regenerate datasets/cu-emt.h5: periodic fcc copper labelled with ASE's EMT.

    python datasets/make_cu_emt.py [--out datasets/cu-emt.h5] [--seed 0] [--scale 1]

The validation file is an independent draw, smaller:
    python datasets/make_cu_emt.py --out datasets/cu-emt_valid.h5 --seed 1 --scale 0.15
The starting structures of potentials/cu-emt-learn.toml (unlabelled extxyz files: bulk,
a vacancy, the three slabs):
    python datasets/make_cu_emt.py --starts runs/cu-starts
Relaxed defects (vacancies and divacancies in 2x2x2 and 3x3x3 cells at five lattice
constants, and the three slabs, each with its EMT relaxation path, every 3rd BFGS step):
    python datasets/make_cu_emt.py --relaxed datasets/cu-emt-relaxed.h5

Structures (energies, forces; stress where fully periodic):
  * strained bulk: 2x2x2 cubic cells (32 atoms), random strain up to 4 % (normal and
    shear), rattled 0.05 A;
  * vacancies: the same with one or two atoms removed;
  * surface slabs of the three low-index surfaces, (111), (100) and (110) (2x2x5 and
    2x2x7 for (110), 10 A vacuum, pbc in-plane), rattled, some with a surface vacancy;
  * MD snapshots: Langevin with EMT at 300, 600, 900 and 1200 K (bulk, vacancy, each
    slab), every 20 steps of 2 fs.
"""

import argparse

import numpy as np
from ase import units
from ase.build import bulk, fcc100, fcc110, fcc111
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from tfn_md.data import write_atoms


def labelled(atoms):
    atoms = atoms.copy()
    atoms.calc = EMT()
    atoms.get_potential_energy()
    atoms.get_forces()
    if atoms.pbc.all():
        atoms.get_stress()
    return atoms


def strained_bulk(rng, remove=0):
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat((2, 2, 2))
    strain = np.eye(3) + rng.uniform(-0.04, 0.04, size=(3, 3))
    atoms.set_cell(atoms.cell.array @ (0.5 * (strain + strain.T)), scale_atoms=True)
    for _ in range(remove):
        del atoms[int(rng.integers(len(atoms)))]
    atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
    return atoms


SURFACES = {"111": (fcc111, 5), "100": (fcc100, 5), "110": (fcc110, 7)}


def slab(rng, surface="111", remove=0):
    build, layers = SURFACES[surface]
    atoms = build("Cu", (2, 2, layers), a=3.59, vacuum=5.0)
    atoms.info.pop("adsorbate_info", None)
    for _ in range(remove):  # from the top layer
        top = np.flatnonzero(atoms.get_tags() == 1)
        del atoms[int(rng.choice(top))]
    atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
    return atoms


def md_snapshots(atoms, temperature, n, rng):
    atoms = atoms.copy()
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.02 / units.fs,
                   rng=rng, fixcm=False)
    frames = []
    for _ in range(n):
        dyn.run(20)
        frames.append(labelled(atoms))
    return frames


def write_starts(folder):
    """bulk.xyz (3x3x3 conventional cells, 108 atoms), vacancy.xyz (one removed), and
    slab<hkl>.xyz (2x2 surface cells, 5 layers, 7 for (110)), unrattled."""
    from pathlib import Path

    import ase.io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cell = bulk("Cu", "fcc", a=3.59, cubic=True).repeat((3, 3, 3))
    ase.io.write(folder / "bulk.xyz", cell)
    del cell[0]
    ase.io.write(folder / "vacancy.xyz", cell)
    for surface, (build, layers) in SURFACES.items():
        atoms = build("Cu", (2, 2, layers), a=3.59, vacuum=5.0)
        atoms.info.pop("adsorbate_info", None)
        ase.io.write(folder / f"slab{surface}.xyz", atoms)


def relaxation_path(atoms, every=3, fmax=0.005):
    """``atoms`` relaxed by BFGS with EMT: every ``every``-th step and the last, labelled."""
    from ase.optimize import BFGS

    atoms = atoms.copy()
    atoms.calc = EMT()
    frames = []
    opt = BFGS(atoms, logfile=None)
    for k, _ in enumerate(opt.irun(fmax=fmax, steps=300)):
        if k % every == 0:
            frames.append(labelled(atoms))
    frames.append(labelled(atoms))
    return frames


def relaxed_defects():
    frames = []
    for a in (3.55, 3.57, 3.59, 3.61, 3.63):
        for repeat in (2, 3):
            cell = bulk("Cu", "fcc", a=a, cubic=True).repeat((repeat,) * 3)
            frames.append(labelled(cell))
            for remove in ((0,), (0, 1)):
                defect = cell.copy()
                del defect[list(remove)]
                frames += relaxation_path(defect)
    for surface, (build, layers) in SURFACES.items():
        atoms = build("Cu", (2, 2, layers), a=3.59, vacuum=5.0)
        atoms.info.pop("adsorbate_info", None)
        frames += relaxation_path(atoms)
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="datasets/cu-emt.h5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies the number of structures of every kind")
    parser.add_argument("--starts", default=None,
                        help="write the starting structures of tfn-md learn to this folder")
    parser.add_argument("--relaxed", default=None,
                        help="write relaxed defects and their relaxation paths to this file")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.starts:
        write_starts(args.starts)
        return
    if args.relaxed:
        frames = relaxed_defects()
        write_atoms(args.relaxed, frames, append=False)
        print(f"wrote {len(frames)} structures to {args.relaxed}")
        return

    def count(n):
        return max(1, round(n * args.scale))

    frames = [labelled(strained_bulk(rng)) for _ in range(count(200))]
    frames += [labelled(strained_bulk(rng, remove=int(rng.integers(1, 3))))
               for _ in range(count(100))]
    for surface in SURFACES:
        frames += [labelled(slab(rng, surface)) for _ in range(count(30))]
        frames += [labelled(slab(rng, surface, remove=1)) for _ in range(count(10))]
    for t in (300, 600, 900, 1200):
        frames += md_snapshots(strained_bulk(rng), t, count(40), rng)
        frames += md_snapshots(strained_bulk(rng, remove=1), t, count(20), rng)
        for surface in SURFACES:
            frames += md_snapshots(slab(rng, surface), t, count(20), rng)
    for a in frames:
        a.info["kind"] = ("bulk" if a.pbc.all() else "slab")
    write_atoms(args.out, frames, append=False)
    print(f"wrote {len(frames)} structures to {args.out}")


if __name__ == "__main__":
    main()
