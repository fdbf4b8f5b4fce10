"""Langevin NVT of ethanol with the shipped GFN2-xTB potential; writes a trajectory and a
PNG of temperature and energies.

    python examples/md_ethanol.py [--steps 4000] [--temperature 600] [--quick]
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from ase.build import molecule

from tfn_md import TFNCalculator
from tfn_md.ase.md import run_md

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=4000)
parser.add_argument("--temperature", type=float, default=600.0)
parser.add_argument("--out", default="md_ethanol")
parser.add_argument("--quick", action="store_true", help="200 steps (tests)")
args = parser.parse_args()

atoms = molecule("CH3CH2OH")
atoms.calc = TFNCalculator("ethanol-gfn2")
steps = 200 if args.quick else args.steps
summary = run_md(atoms, steps, temperature=args.temperature, timestep=0.5,
                 trajectory=f"{args.out}.traj", interval=10)
log = summary.pop("rows")  # the logged rows, also in md_ethanol.log

fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6, 5), sharex=True, dpi=120)
ax1.plot(log["time_ps"], log["T_K"])
ax1.axhline(args.temperature, color="k", lw=0.8, ls="--")
ax1.set_ylabel("T (K)")
ax2.plot(log["time_ps"], log["Epot_eV"], label="potential")
ax2.plot(log["time_ps"], log["Etot_eV"], label="total")
ax2.set_xlabel("time (ps)")
ax2.set_ylabel("energy (eV)")
ax2.legend()
fig.tight_layout()
fig.savefig(f"{args.out}.png")
# stability: every recorded frame keeps the bonds of the starting molecule
from ase.io import read
from ase.neighborlist import build_neighbor_list, natural_cutoffs


def bonds(a):
    nl = build_neighbor_list(a, natural_cutoffs(a, mult=1.2), self_interaction=False,
                             bothways=False, skin=0.0)
    return {tuple(sorted((i, j))) for i in range(len(a)) for j in nl.get_neighbors(i)[0]}


reference = bonds(molecule("CH3CH2OH"))
frames = read(f"{args.out}.traj", index=":")
broken = sum(bonds(f) != reference for f in frames)
summary["frames_with_changed_bonds"] = broken
summary["frames"] = len(frames)
print({k: v for k, v in summary.items()})
print(f"wrote {args.out}.traj and {args.out}.png")
