"""What the dipole head costs per MD step: the same 32-channel ethanol model with and
without it, through TFNCalculator's default compiled path, in one run.

    python benchmarks/bench_dipole.py [--calls 2000] [--dtype float32]

The two models share every weight (the dipole model's charge readout is extra); each is
called on a rattled ethanol sequence (energy + forces, what an MD step asks; the dipole
model's calls also return its charges and dipole), after 50 untimed calls that compile.
Reported: the median over 5 blocks of ms per call, and the ratio.
"""

import argparse
import time

import numpy as np
import torch
from ase.build import molecule

from tfn_md import TFN, TFNCalculator


def timed(calc, calls: int, blocks: int = 5) -> float:
    atoms = molecule("CH3CH2OH")
    atoms.calc = calc
    rng = np.random.default_rng(0)
    base = atoms.positions.copy()
    for _ in range(50):  # compile
        atoms.positions = base + rng.normal(0, 0.02, base.shape)
        atoms.get_forces()
    out = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(calls // blocks):
            atoms.positions = base + rng.normal(0, 0.02, base.shape)
            atoms.get_forces()
        out.append((time.perf_counter() - start) / (calls // blocks) * 1e3)
    return float(np.median(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = p.parse_args()
    kwargs = {"channels": 32, "l_max": 2, "layers": 2, "cutoff": 5.0}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        plain = TFN(["H", "C", "O"], **kwargs)
        dipole = TFN(["H", "C", "O"], dipole=True, **kwargs)
    dipole.load_state_dict(plain.state_dict(), strict=False)
    t_plain = timed(TFNCalculator(plain, dtype=args.dtype), args.calls)
    t_dipole = timed(TFNCalculator(dipole, dtype=args.dtype), args.calls)
    print(f"ethanol, 32 channels, {args.dtype}, compiled, {torch.get_num_threads()} threads")
    print(f"| model | ms/call |\n|---|---|\n| energy + forces | {t_plain:.3f} |\n"
          f"| energy + forces + charges + dipole | {t_dipole:.3f} |")
    print(f"the dipole head adds {100 * (t_dipole / t_plain - 1):+.1f} % per call")


if __name__ == "__main__":
    main()
