"""MD with and without a dipole head, in one run: what the head costs per step.

    git show f112192:potentials/ethanol-gfn2.pt > /tmp/eth_old.pt   # step 4: no head
    python benchmarks/bench_dipole_md.py /tmp/eth_old.pt ethanol-gfn2

Langevin MD of ethanol through ``tfn_md.ase.md.run_md`` (default calculator: compiled),
4000 steps with a frame (and its dipole, where the potential has one) every 4 steps, the
IR setting; three runs of each potential, alternating, after 300 untimed steps that
compile. Prints steps/s and the difference of the best runs.
"""

import argparse

from ase.build import molecule

from tfn_md import TFNCalculator
from tfn_md.ase.md import run_md


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("without", help="potential without a dipole head")
    p.add_argument("with_head", help="the same potential with one")
    p.add_argument("--steps", type=int, default=4000)
    args = p.parse_args()
    calcs = {args.without: TFNCalculator(args.without),
             args.with_head: TFNCalculator(args.with_head)}
    speeds: dict = {}
    for rep in range(4):
        for name, calc in calcs.items():
            atoms = molecule("CH3CH2OH")
            atoms.calc = calc
            if rep == 0:
                run_md(atoms, 300, progress=False)  # compile
                continue
            s = run_md(atoms, args.steps, interval=4, progress=False)
            speeds.setdefault(name, []).append(s["steps_per_second"])
    for name, v in speeds.items():
        print(f"{name}: {', '.join(f'{x:.0f}' for x in v)} steps/s (best {max(v):.0f})")
    a, b = (max(v) for v in speeds.values())
    print(f"the dipole head costs {100 * (a / b - 1):+.1f} % per MD step")


if __name__ == "__main__":
    main()
