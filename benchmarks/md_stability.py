"""Is a potential stable in long, hot MD? Langevin MD with the potential, then its bonds,
its closest contacts and its energies against the reference.

    python benchmarks/md_stability.py --potential ethanol-gfn2 --molecule CH3CH2OH \
        --temperature 1000 --ps 100 --seed 4242 [--reference GFN2-xTB] [--out md1000]

``--potential GFN2-xTB`` (the reference's name) runs the same MD with the reference: the
baseline for the bond counts. Langevin (0.5 fs, friction 0.01/fs, from a Maxwell-Boltzmann
start at the temperature), a frame every 100 fs written to ``OUT.traj``. Reported: the
frames that miss a bond of the start (pairs closer than 1.2, and 1.5, x the sum of covalent
radii) and whether the last does, the closest pair of atoms not bonded at the start over
all frames, and every 10th ps (frames at 10, 20, ... ps) the energy per atom of the
potential against the reference at the same geometry.
"""

import argparse
import time

import numpy as np
from ase import units
from ase.calculators.calculator import CalculationFailed
from ase.io import Trajectory
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from bond_check import bonds  # benchmarks/bond_check.py

from tfn_md import TFNCalculator
from tfn_md.data.sources import molecule_or_file
from tfn_md.learn.reference import reference_factory


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--potential", default="ethanol-gfn2")
    p.add_argument("--molecule", default="CH3CH2OH")
    p.add_argument("--temperature", type=float, default=1000.0)
    p.add_argument("--ps", type=float, default=100.0)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--reference", default="GFN2-xTB")
    p.add_argument("--out", default="md_stability")
    args = p.parse_args()
    atoms, _ = molecule_or_file(args.molecule, None)
    rng = np.random.default_rng(args.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
    make = reference_factory(args.reference, "", {})
    own = args.potential == args.reference  # the reference's own MD: the baseline
    atoms.calc = make(args.reference) if own else TFNCalculator(args.potential)
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=args.temperature,
                   friction=0.01 / units.fs, rng=rng, fixcm=False)
    every = 200  # steps: 100 fs
    start = time.perf_counter()
    with Trajectory(f"{args.out}.traj", "w", atoms) as traj:
        traj.write()
        dyn.attach(traj.write, interval=every)
        dyn.run(int(round(args.ps * 1000 / 0.5)))
    wall = time.perf_counter() - start
    frames = list(Trajectory(f"{args.out}.traj"))
    starts = {factor: bonds(frames[0], factor) for factor in (1.2, 1.5)}
    first = starts[1.2]
    closest = min(float(a.get_all_distances()[~first & ~np.eye(len(a), dtype=bool)].min())
                  for a in frames)
    temps = [a.get_kinetic_energy() / (1.5 * units.kB * len(a)) for a in frames[1:]]
    print(f"{args.ps:g} ps at {args.temperature:g} K (seed {args.seed}): {len(frames)} frames, "
          f"{wall:.0f} s, mean kinetic temperature {np.mean(temps):.0f} K")
    for factor, start in starts.items():
        lost = [start & ~bonds(a, factor) for a in frames]
        missing = [bool(x.any()) for x in lost]
        print(f"{factor} x covalent radii: frames missing a bond of the start {sum(missing)}, "
              f"the last frame {'too' if missing[-1] else 'not'}")
        if any(missing):  # which bonds, and when first
            s = frames[0].get_chemical_symbols()
            pairs = sorted({(i, j) for x in lost for i, j in zip(*np.nonzero(np.triu(x)))})
            first = next(k for k, m in enumerate(missing) if m)
            print("  bonds missing: " + ", ".join(f"{s[i]}{i}-{s[j]}{j}" for i, j in pairs)
                  + f"; first at frame {first} ({first * every * 0.5 / 1000:.1f} ps)")
    print(f"closest pair not bonded at the start: {closest:.3f} A")
    if own:
        return
    reference = make(args.reference)
    worst = 0.0
    per_ps = int(round(10 * 1000 / (every * 0.5)))  # frames per 10 ps
    for k in range(per_ps, len(frames), per_ps):
        a = frames[k].copy()
        a.calc = TFNCalculator(args.potential)
        e_pot = a.get_potential_energy()
        a.calc = reference
        try:
            e_ref = a.get_potential_energy()
        except CalculationFailed as err:  # e.g. an SCF that does not converge on a
            # geometry the reference never sees in its own MD (a broken bond)
            print(f"  {k * every * 0.5 / 1000:6.1f} ps: {args.reference} failed ({err})")
            reference = make(args.reference)
            continue
        diff = (e_pot - e_ref) / len(a) * 1e3
        worst = max(worst, abs(diff))
        print(f"  {k * every * 0.5 / 1000:6.1f} ps: potential - {args.reference} = "
              f"{diff:+.2f} meV/atom")
    print(f"largest |difference| every 10 ps: {worst:.2f} meV/atom")


if __name__ == "__main__":
    main()
