"""Regenerate datasets/cu-emt.h5: periodic fcc copper labelled with ASE's EMT.

    python datasets/make_cu_emt.py [--out datasets/cu-emt.h5] [--seed 0]

Structures (energies, forces; stress where fully periodic):
  * strained bulk: 2x2x2 cubic cells (32 atoms), random strain up to 4 % (normal and
    shear), rattled 0.05 A;
  * vacancies: the same with one or two atoms removed;
  * a (111) surface slab (2x2x5, 10 A vacuum, pbc in-plane), rattled;
  * MD snapshots: Langevin with EMT at 300, 600, 900 and 1200 K (bulk, vacancy, slab),
    every 20 steps of 2 fs.
"""

import argparse

import numpy as np
from ase import units
from ase.build import bulk, fcc111
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


def slab(rng):
    atoms = fcc111("Cu", (2, 2, 5), a=3.59, vacuum=5.0)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="datasets/cu-emt.h5")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    frames = [labelled(strained_bulk(rng)) for _ in range(200)]
    frames += [labelled(strained_bulk(rng, remove=int(rng.integers(1, 3)))) for _ in range(100)]
    frames += [labelled(slab(rng)) for _ in range(40)]
    for t in (300, 600, 900, 1200):
        frames += md_snapshots(strained_bulk(rng), t, 40, rng)
        frames += md_snapshots(strained_bulk(rng, remove=1), t, 20, rng)
        frames += md_snapshots(slab(rng), t, 20, rng)
    for k, a in enumerate(frames):
        a.info["kind"] = ("bulk" if a.pbc.all() else "slab")
    write_atoms(args.out, frames, append=False)
    print(f"wrote {len(frames)} structures to {args.out}")


if __name__ == "__main__":
    main()
