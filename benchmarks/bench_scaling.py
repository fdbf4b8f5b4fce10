"""Time and peak memory per atom of an energy + forces call, from 108 to ~100k atoms.

    python benchmarks/bench_scaling.py [--max-atoms 100000] [--threads 1] [--compile]

fcc Cu supercells (a = 3.61 A, rattled), channels 32, l_max 2, 2 layers, cutoff 5 A,
float32, random weights, through TFNCalculator with a fresh neighbour search every call
(skin 0), eager (compile=False) or compiled (--compile). Every size runs in a fresh
process so its peak resident memory (ru_maxrss) is its own.
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def child(n_cells: int, threads: int, compile: bool) -> None:
    import torch
    from ase.build import bulk

    from tfn_md import TFN, TFNCalculator

    torch.set_num_threads(threads)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n_cells,) * 3)
    atoms.rattle(0.05, seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TFN(species=["Cu"], channels=32, l_max=2, layers=2, cutoff=5.0)
    atoms.calc = TFNCalculator(model, skin=0.0, compile=compile)
    atoms.get_forces()  # warm-up (and compiling, with --compile)
    times = []
    for _ in range(2 if len(atoms) > 20000 else 4):
        atoms.rattle(1e-4)
        t = time.perf_counter()
        atoms.get_forces()
        times.append(time.perf_counter() - t)
    print(json.dumps({"atoms": len(atoms), "seconds": min(times),
                      "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-atoms", type=int, default=100000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--png", default="benchmarks/scaling.png")
    parser.add_argument("--compile", action="store_true",
                        help="TFNCalculator(compile=True), first call untimed")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.threads, args.compile)
    rows = []
    for n_cells in (3, 6, 9, 12, 16, 20, 25, 29):
        if 4 * n_cells**3 > args.max_atoms:
            break
        out = subprocess.run([sys.executable, __file__, "--child", str(n_cells), "--threads",
                              str(args.threads)] + ["--compile"] * args.compile,
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["us_per_atom"] = 1e6 * row["seconds"] / row["atoms"]
        rows.append(row)
        print(f"{row['atoms']:>7} atoms  {row['seconds']:8.3f} s  {row['us_per_atom']:7.1f} "
              f"us/atom  peak {row['peak_gb']:.2f} GB", flush=True)
    ref = [r["us_per_atom"] for r in rows if r["atoms"] >= 1000]
    if ref:
        lo, hi = min(ref), max(ref)
        print(f"time per atom from 1k atoms up: {lo:.1f} - {hi:.1f} us "
              f"(spread {100 * (hi - lo) / lo:.0f} % of the smallest)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax1 = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    n = [r["atoms"] for r in rows]
    ax1.semilogx(n, [r["us_per_atom"] for r in rows], "o-", label="time per atom")
    ax1.set_xlabel("atoms")
    ax1.set_ylabel("microseconds per atom (E + F)")
    ax2 = ax1.twinx()
    ax2.semilogx(n, [r["peak_gb"] for r in rows], "s--", color="C1", label="peak memory")
    ax2.set_ylabel("peak resident memory (GB)")
    fig.legend(loc="upper center")
    fig.tight_layout()
    fig.savefig(args.png)


if __name__ == "__main__":
    main()
