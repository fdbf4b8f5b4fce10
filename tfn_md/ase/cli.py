"""``tfn-md md`` and ``tfn-md relax``: run a shipped or trained potential on a structure."""

import argparse
import json
from pathlib import Path

__all__ = ["add_simulate_parsers"]


def _structure_args(p):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--molecule", help="ase.build.molecule name, e.g. CH3CH2OH")
    src.add_argument("--structure", type=Path, help="any file ase.io.read reads (last frame)")
    p.add_argument("--potential", required=True,
                   help="shipped potential name (e.g. ethanol-gfn2) or checkpoint path")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"])


def add_simulate_parsers(subparsers) -> None:
    p = subparsers.add_parser(
        "md", help="molecular dynamics with a TFN potential",
        description="Langevin NVT (NVE with --friction 0) with a TFN potential; writes a "
        "trajectory (.traj for ASE, .xyz for extended XYZ) and prints a summary.",
        epilog="example: tfn-md md --potential ethanol-gfn2 --molecule CH3CH2OH --steps 2000")
    _structure_args(p)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--friction", type=float, default=0.01, help="1/fs (0: NVE)")
    p.add_argument("--interval", type=int, default=10, help="steps between frames")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, default=Path("md.traj"))
    p.set_defaults(func=_md)

    r = subparsers.add_parser(
        "relax", help="relax a structure (and its cell) with a TFN potential",
        description="BFGS on atoms, or on atoms and cell with --cell (FrechetCellFilter).")
    _structure_args(r)
    r.add_argument("--fmax", type=float, default=0.01, help="eV/A")
    r.add_argument("--cell", action="store_true", help="relax the cell too")
    r.add_argument("-o", "--output", type=Path, default=Path("relaxed.xyz"))
    r.set_defaults(func=_relax)


def _load(args):
    from ase.build import molecule
    from ase.io import read

    from .calculator import TFNCalculator

    atoms = molecule(args.molecule) if args.molecule else read(args.structure, index=-1)
    atoms.calc = TFNCalculator(args.potential, device=args.device, dtype=args.dtype)
    return atoms


def _md(args: argparse.Namespace) -> int:
    from .md import run_md

    atoms = _load(args)
    summary = run_md(atoms, args.steps, args.temperature, args.timestep, args.friction,
                     args.output, args.interval, args.seed)
    summary.pop("log")
    print(json.dumps(summary, indent=1, default=float))
    return 0


def _relax(args: argparse.Namespace) -> int:
    import numpy as np
    from ase.io import write

    from .md import relax

    atoms = _load(args)
    ok = relax(atoms, args.fmax, cell=args.cell)
    write(args.output, atoms)
    print(json.dumps({"converged": ok, "energy_eV": atoms.get_potential_energy(),
                      "fmax_eV_per_A": float(np.linalg.norm(atoms.get_forces(), axis=1).max()),
                      "cell": atoms.cell.array.tolist(), "output": str(args.output)}, indent=1))
    return 0 if ok else 1
