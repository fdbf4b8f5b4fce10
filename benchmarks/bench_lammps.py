"""LAMMPS (pair_style mliap unified) against TFNCalculator on fcc Cu, same potential.

    eval "$(examples/lammps/build_lammps.sh --env)"
    OMP_NUM_THREADS=1 python benchmarks/bench_lammps.py [--sizes 6 20] [--steps 10 3]

Shipped ``cu-emt`` potential (2 layers, cutoff 5 A), float32, 1 thread per process.
Per size (n x n x n cubic fcc cells: 6 -> 864 atoms, 20 -> 32000 atoms), rattled by 0.05 A:

* TFNCalculator: energy + forces per call (what an MD step needs), median of ``steps``
  calls after warm-up; rows for the default (compile="auto", timed once it has compiled:
  the whole-response program up to 65536 edges; above, compile=True, the compiled
  edge-kernel chunks "auto" switches to after 20 calls) and for compile=False (eager).
* LAMMPS on 1 rank, and on 2 ranks (``mpiexec -n 2``) for the largest size: NVE steps at
  600 K, 1 fs, ``comm_modify cutoff 12``; seconds per step of ``run STEPS`` after
  8 warm-up steps (the potential exported with compile=True, what its default "auto"
  switches to after 20 steps: a rank's pruned graph as one compiled program up to
  tfn_md.lammps.local_program.MAX_EDGES edges, compiled at the first step and cached on disk,
  and above that the compiled edge-kernel chunks), with
  the time spent inside the potential's compute_forces (the rest is LAMMPS: neighbour
  lists, ghost communication, integration). The timed ``run`` continues the warm-up one
  (``pre no``): a plain ``run`` would first evaluate the forces once more in its set-up.

Each LAMMPS run is its own process (this script with --worker).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


def cu(n):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n, n, n))
    atoms.rattle(0.05, seed=0)
    atoms.wrap()
    return atoms


def bench_calculator(n, steps, compile):
    import torch

    from tfn_md import TFNCalculator

    atoms = cu(n)
    atoms.calc = TFNCalculator("cu-emt", dtype=torch.float32, compile=compile)
    rng = np.random.default_rng(0)
    warm = 22 if compile == "auto" else 2  # "auto" compiles after 20 calls
    times = []
    for k in range(warm + steps):
        atoms.positions += rng.normal(0, 1e-3, atoms.positions.shape)
        t0 = time.perf_counter()
        atoms.get_forces()
        if k >= warm:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker(model_file, n, steps, warm):
    """One LAMMPS process (or rank): prints a JSON line on rank 0."""
    sys.path.insert(0, str(ROOT / "tests"))
    import lammps_driver

    import tfn_md.lammps as tl

    inside = [0.0]
    original = tl.TFNMLIAP.compute_forces

    def timed(self, data):
        t0 = time.perf_counter()
        original(self, data)
        inside[0] += time.perf_counter() - t0

    tl.TFNMLIAP.compute_forces = timed
    atoms = cu(n)
    lmp = lammps_driver.start()
    lammps_driver.setup(lmp, atoms, model_file, ["Cu"], 2, 5.0)
    lmp.command("velocity all create 600.0 12345 mom yes rot yes dist gaussian")
    lmp.command("timestep 0.001")
    lmp.command("thermo 0")
    lmp.command("fix nve all nve")
    lmp.command(f"run {warm}")
    inside[0] = 0.0
    t0 = time.perf_counter()
    lmp.command(f"run {steps} pre no post no")  # continue: no setup force evaluation
    wall = time.perf_counter() - t0
    rank = lmp.extract_setting("world_rank")
    nprocs = lmp.extract_setting("world_size")
    lmp.close()
    if rank == 0:
        print(json.dumps({"step": wall / steps, "inside": inside[0] / steps, "ranks": nprocs}))


def run_lammps(model_file, n, steps, ranks):
    cmd = [sys.executable, str(HERE), "--worker", str(model_file), str(n), str(steps)]
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks), *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6, 20])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 3])
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "N", "STEPS"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.worker:
        model, n, steps = args.worker[0], int(args.worker[1]), int(args.worker[2])
        worker(model, n, steps, warm=8)  # compiled chunks settle over the first steps
        return
    from tfn_md.lammps import export_lammps

    model_file = Path(os.environ.get("TMPDIR", "/tmp")) / "bench-cu-emt-float32.mliap"
    export_lammps("cu-emt", model_file, dtype="float32", compile=True)
    print("| atoms | engine | s/step | inside compute_forces | LAMMPS / TFNCalculator auto |")
    print("|---|---|---|---|---|")
    for n, steps in zip(args.sizes, args.steps):
        natoms = 4 * n**3
        # large systems: compile=True is what "auto" switches to after 20 calls
        auto = bench_calculator(n, steps, "auto" if natoms < 5000 else True)
        eager = bench_calculator(n, steps, False)
        print(f"| {natoms} | TFNCalculator compile='auto' | {auto:.4f} | - | - |", flush=True)
        print(f"| {natoms} | TFNCalculator compile=False | {eager:.4f} | - | - |", flush=True)
        rank_counts = (1, 2) if n == max(args.sizes) else (1,)
        one = None
        for ranks in rank_counts:
            r = run_lammps(model_file, n, steps, ranks)
            one = one or r["step"]
            extra = "" if ranks == 1 else f" (speed-up over 1 rank {one / r['step']:.2f}x)"
            print(f"| {natoms} | LAMMPS {ranks} rank{'s' if ranks > 1 else ''} | "
                  f"{r['step']:.4f} | {r['inside']:.4f} | {r['step'] / auto:.2f}x{extra} |",
                  flush=True)


if __name__ == "__main__":
    main()
