"""End-to-end time of the README's main job, beside the same MD driven by GFN2-xTB.

    python benchmarks/bench_md.py                 # 2000 steps, default threads and 1 thread
    python benchmarks/bench_md.py --steps 500 --skip-xtb
    python benchmarks/bench_md.py --cold-cache    # compile from scratch
    python benchmarks/bench_md.py --threads default   # only the user's default setting
    python benchmarks/bench_md.py --potential learn-X/final.pt --molecule X   # another one

The job: ``tfn-md md --potential ethanol-gfn2 --molecule CH3CH2OH --steps 2000
--temperature 300 -o ethanol.traj`` (Langevin NVT, 0.5 fs, friction 0.01/fs, a frame every
10 steps; calculator defaults: the potential's float32, skin 0.5, compile="auto", which
compiles after the first 20 eager calls). Three runs, each in a fresh process, for each
thread setting: "default" (no thread flag, no OMP_NUM_THREADS: what a user gets; torch
and tblite take one thread per core) and "1" (``tfn-md --threads 1``, OMP_NUM_THREADS=1):

* tfn_md CLI: the command above as it is, in a temporary folder; its wall time from
  process launch to exit, and the speed it prints itself (its ``wall_seconds`` are those
  of the whole ``dyn.run``: first calls and compiling included).
* tfn_md in-process: the same Langevin set-up as ``tfn_md.ase.md.run_md`` (same seed,
  velocities, integrator, trajectory and log; no progress bar), run as ``dyn.run(warm)``
  then ``dyn.run(steps - warm)`` with ``warm`` = 25 steps (the compiled program is in use
  from step 20): start-up = process launch to the end of the warm steps, split into
  "import + load" (imports, potential, calculator, velocities) and "first steps" (eager
  calls and compiling); steps/s = (steps - warm) / the second ``dyn.run``.
* GFN2-xTB in-process: the same MD and split with ``tblite.ase.TBLite(method="GFN2-xTB",
  verbosity=0)``, under the same thread setting.

Compiled programs are cached on disk (tfn_md.inference.programs.cache_dir()): by default the
runs use the ordinary cache (a program compiled by an earlier run loads in about a second);
``--cold-cache`` gives each tfn_md run fresh, empty tfn_md and Inductor caches, so the
first run of a new installation is timed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARM = 25  # steps of start-up in the in-process runs (compile="auto" compiles at step 20)
TIMESTEP, FRICTION, TEMPERATURE, INTERVAL, SEED = 0.5, 0.01, 300.0, 10, 0  # tfn-md md defaults
CLI = Path(sys.executable).with_name("tfn-md")
POTENTIAL, MOLECULE = "ethanol-gfn2", "CH3CH2OH"  # set by --potential, --molecule


def worker(engine: str, steps: int, launched: float, out: str, threads: str) -> None:
    """One in-process MD run; prints a JSON line of timestamps (time.time(), so that the
    parent's launch time counts)."""
    import numpy as np
    from ase import units
    from ase.build import molecule
    from ase.io import Trajectory
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = molecule(MOLECULE)
    if engine == "tfn_md":
        import torch

        from tfn_md import TFNCalculator

        if threads != "default":
            torch.set_num_threads(int(threads))
        atoms.calc = TFNCalculator(POTENTIAL)  # the CLI's defaults
    else:
        from tblite.ase import TBLite

        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    # as tfn_md.ase.md.run_md
    rng = np.random.default_rng(SEED)
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, TIMESTEP * units.fs, temperature_K=TEMPERATURE,
                   friction=FRICTION / units.fs, rng=rng, fixcm=False)
    log = {"time_fs": [], "temperature_K": [], "epot_eV": [], "etot_eV": []}
    traj = Trajectory(out, "w", atoms)

    def record():
        log["time_fs"].append(dyn.nsteps * TIMESTEP)
        log["temperature_K"].append(atoms.get_temperature())
        log["epot_eV"].append(atoms.get_potential_energy())
        log["etot_eV"].append(atoms.get_total_energy())
        traj.write()

    dyn.attach(record, interval=INTERVAL)
    loaded = time.time()
    dyn.run(WARM)
    warm = time.time()
    dyn.run(steps - WARM)
    done = time.time()
    traj.close()
    engine = getattr(atoms.calc, "engine", None)  # GFN2-xTB has none
    program = None if engine is None else engine.compiled  # None: no compiled path
    compiled = None if program is None else program.n_programs
    print(json.dumps({"launched": launched, "loaded": loaded, "warm": warm, "done": done,
                      "closed": time.time(), "compiled_programs": compiled,
                      "mean_temperature_K": float(np.mean(log["temperature_K"]))}))


def thread_env(threads: str) -> dict:
    """The environment of a run: the user's, with OMP_NUM_THREADS as ``threads`` says."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return env if threads == "default" else {**env, "OMP_NUM_THREADS": threads}


def run_worker(engine: str, steps: int, folder: Path, env: dict, threads: str) -> dict:
    launched = time.time()
    cmd = [sys.executable, __file__, "--worker", engine, "--steps", str(steps),
           "--launched", repr(launched), "--out", str(folder / f"{engine}.traj"),
           "--threads", threads, "--potential", POTENTIAL, "--molecule", MOLECULE]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    t = json.loads(out.strip().splitlines()[-1])
    ended = time.time()
    return {"import_load": t["loaded"] - t["launched"], "first": t["warm"] - t["loaded"],
            "startup": t["warm"] - t["launched"],
            "steps_per_s": (steps - WARM) / (t["done"] - t["warm"]),
            "total": ended - launched, "compiled_programs": t["compiled_programs"],
            "mean_temperature_K": t["mean_temperature_K"]}


def run_cli(steps: int, folder: Path, env: dict, threads: str) -> dict:
    flags = [] if threads == "default" else ["--threads", threads]
    cmd = [str(CLI), *flags, "md", "--potential", POTENTIAL, "--molecule", MOLECULE,
           "--steps", str(steps), "--temperature", "300", "-o", "md.traj"]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env,
                         check=True).stdout
    total = time.perf_counter() - start
    summary = json.loads(out[out.index("{"):])
    return {"total": total, "outside_run": total - summary["wall_seconds"],
            "steps_per_s": summary["steps_per_second"],
            "mean_temperature_K": summary["mean_temperature_K"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--skip-xtb", action="store_true", help="no GFN2-xTB run")
    parser.add_argument("--cold-cache", action="store_true",
                        help="fresh, empty compile caches for each tfn_md run")
    parser.add_argument("--threads", action="append", choices=["default", "1", "2"],
                        help="thread settings to run (repeatable; default: default and 1)")
    parser.add_argument("--potential", default="ethanol-gfn2",
                        help="shipped name or checkpoint (an absolute path or one from here)")
    parser.add_argument("--molecule", default="CH3CH2OH", help="ase.build.molecule name")
    parser.add_argument("--worker", choices=["tfn_md", "xtb"], help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global POTENTIAL, MOLECULE
    POTENTIAL = str(Path(args.potential).resolve()) if Path(args.potential).exists() \
        else args.potential
    MOLECULE = args.molecule
    if args.worker:
        return worker(args.worker, args.steps, args.launched, args.out, args.threads[0])
    if args.steps <= WARM:
        parser.error(f"--steps must be more than {WARM}")
    cache = "fresh, empty (--cold-cache)" if args.cold_cache else "the ordinary disk cache"
    print(f"## {MOLECULE} Langevin MD with {args.potential}, {args.steps} steps of {TIMESTEP} fs at {TEMPERATURE:.0f} K; "
          f"tfn_md compile cache: {cache}\n")
    print(f"| threads | run | import + load s | first {WARM} steps s | start-up s | "
          f"steps/s after start-up | total wall s |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for threads in args.threads or ["default", "1"]:
        env = thread_env(threads)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)

            def tfn_env(name, env=env, tmp=tmp):
                if not args.cold_cache:
                    return env
                cache = tmp / f"cache-{name}"
                return {**env, "TFN_MD_CACHE": str(cache / "tfn_md"),
                        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor")}

            cli = run_cli(args.steps, tmp, tfn_env("cli"), threads)
            ours = run_worker("tfn_md", args.steps, tmp, tfn_env("worker"), threads)
            xtb = None if args.skip_xtb else run_worker("xtb", args.steps, tmp, env, threads)
        flag = "" if threads == "default" else f"--threads {threads} "
        print(f"| {threads} | tfn_md CLI (`tfn-md {flag}md ...`) | {cli['outside_run']:.2f} "
              f"(all time outside dyn.run) | - | - | {cli['steps_per_s']:.0f} (its own figure: "
              f"all steps, start-up included) | {cli['total']:.2f} |", flush=True)
        for name, r in (("tfn_md in-process", ours), ("GFN2-xTB in-process", xtb)):
            if r is not None:
                print(f"| {threads} | {name} | {r['import_load']:.2f} | {r['first']:.2f} | "
                      f"{r['startup']:.2f} | {r['steps_per_s']:.0f} | {r['total']:.2f} |",
                      flush=True)
        line = (f"threads {threads}: tfn_md in-process {ours['compiled_programs']} compiled "
                f"program(s) after start-up; mean temperatures (K): CLI "
                f"{cli['mean_temperature_K']:.1f}, in-process {ours['mean_temperature_K']:.1f}")
        if xtb is not None:
            line += (f", GFN2-xTB {xtb['mean_temperature_K']:.1f}. Steps/s after start-up, "
                     f"tfn_md / GFN2-xTB: {ours['steps_per_s'] / xtb['steps_per_s']:.2f}x; "
                     f"total wall time, GFN2-xTB / tfn_md CLI: "
                     f"{xtb['total'] / cli['total']:.2f}x")
        summary.append(line + ".")
    print("\n" + "\n".join(summary))


if __name__ == "__main__":
    main()
