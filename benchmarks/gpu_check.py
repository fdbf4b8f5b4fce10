"""The prepared GPU check: every part of tfn_md that runs on a GPU, in one run of minutes.

    python benchmarks/gpu_check.py [--out DIR] [--budget 330]          # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --quick                # rehearse the code

Sections (each prints its lines and a verdict; a failing section does not stop the others;
sections left when ``--budget`` seconds have passed are skipped and say so):

1. ``env``: Python, torch, CUDA build, device name. Without CUDA (and without ``--device
   cpu``) the check says so and stops after a CPU smoke test: exit code 0, so a rehearsal
   on a CPU machine proves the install and nothing else.
2. ``tests``: the CUDA tests of the suite (``pytest -k cuda``).
3. ``agreement``: the shipped potentials (ethanol-gfn2 on ethanol, cu-emt on a rattled
   256-atom fcc Cu cell) on the device on every path (exact MLPs, radial tables, the
   compiled whole program, the compiled edge-kernel chunks) against the CPU's exact path in
   float64: max |dE| (eV), |dF| (eV/A), |dS| (eV/A^3). Goal: forces within 1e-5 eV/A.
4. ``throughput``: a 32-channel, l_max 2, 2-layer Cu model (cu-emt's size) on fcc Cu of
   6912, 32000 and 108000 atoms, energy + forces + stress in float32, MD-like calls (each
   moves the atoms a little; the Verlet list is reused; the compiled edge-kernel chunks,
   which MD of a large system runs after 20 calls): atom-steps/s and peak memory.
5. ``md``: a few hundred MD steps of each shipped potential on the device (Langevin ethanol
   at 300 K; NPT Cu at 300 K), steps/s and the conserved-energy drift.
6. ``train``: one training epoch on the device (``datasets/cu-emt_valid.h5``, 32 channels).

Everything printed is also written to ``OUT/gpu_check.txt`` (``--out``, default ``$OUT`` or
``gpu_check_out``), the numbers to ``OUT/gpu_check.json``.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS: dict = {}


class Tee:
    def __init__(self, path: Path):
        self.file = open(path, "w", buffering=1)  # noqa: SIM115 (open for the whole run)

    def __call__(self, *parts):
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.file.write(line + "\n")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def cu_cell(n: int, rattle: float = 0.05, seed: int = 0):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n, n, n))
    atoms.rattle(rattle, seed=seed)
    return atoms


def section_env(log, args) -> bool:
    log(f"python {platform.python_version()}, torch {torch.__version__} (CUDA build "
        f"{torch.version.cuda}), {os.cpu_count()} CPUs")
    if args.device == "cpu":
        log("--device cpu: every section runs on the CPU (a rehearsal of the code)")
        return True
    if not torch.cuda.is_available():
        log("CUDA is not available: the GPU sections are skipped (this is a rehearsal "
            "of the install). CPU smoke test:")
        from ase.build import molecule

        from tfn_md import TFNCalculator

        atoms = molecule("CH3CH2OH")
        atoms.calc = TFNCalculator("ethanol-gfn2", compile=False)
        log(f"  ethanol-gfn2 on the CPU: E = {atoms.get_potential_energy():.6f} eV, "
            f"max |F| = {np.abs(atoms.get_forces()).max():.4f} eV/A")
        RESULTS["cuda"] = False
        return False
    props = torch.cuda.get_device_properties(0)
    log(f"device: {props.name}, {props.total_memory / 2**30:.1f} GiB")
    RESULTS["device"] = props.name
    return True


def section_tests(log, args):
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
           "tests/ase/test_checkpoint_and_calculator.py", "-k", "cuda"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                         check=False)
    for line in (run.stdout + run.stderr).strip().splitlines()[-8:]:
        log("  " + line)
    RESULTS["tests_returncode"] = run.returncode
    if run.returncode not in (0, 5):  # 5: nothing collected (the CPU rehearsal)
        raise RuntimeError(f"pytest exit code {run.returncode}")


PATHS = {  # name -> TFNCalculator options; "chunks" forces the compiled edge-kernel chunks
    "exact": {"exact": True, "compile": False},
    "tables": {"compile": False},
    "program": {"compile": True},
    "chunks": {"compile": False},
}


def calculator(potential, device, dtype, path):
    from tfn_md import TFNCalculator

    calc = TFNCalculator(potential, device=device, dtype=dtype, skin=0.0, **PATHS[path])
    if path == "chunks":
        calc.engine._compile_chunks()
    return calc


def section_agreement(log, args):
    from ase.build import molecule

    cases = [("ethanol-gfn2", molecule("CH3CH2OH")), ("cu-emt", cu_cell(2 if args.quick else 4))]
    worst = 0.0
    for potential, atoms in cases:
        cpu = atoms.copy()
        cpu.calc = calculator(potential, "cpu", torch.float64, "exact")
        e0, f0 = cpu.get_potential_energy(), cpu.get_forces()
        s0 = cpu.get_stress() if atoms.pbc.all() else None
        for path in PATHS:
            a = atoms.copy()
            a.calc = calculator(potential, args.device, torch.float64, path)
            de = abs(a.get_potential_energy() - e0)
            df = np.abs(a.get_forces() - f0).max()
            ds = np.abs(a.get_stress() - s0).max() if s0 is not None else float("nan")
            worst = max(worst, df)
            log(f"  {potential:13s} {len(a):4d} atoms {path:8s} float64: |dE| {de:.1e} eV  "
                f"|dF| {df:.1e} eV/A  |dS| {ds:.1e} eV/A^3")
            RESULTS.setdefault("agreement", []).append(
                {"potential": potential, "path": path, "dE": de, "dF": df, "dS": ds})
    log(f"  worst force difference {worst:.1e} eV/A (goal 1e-5): "
        f"{'met' if worst <= 1e-5 else 'NOT met'}")
    if worst > 1e-5:
        raise RuntimeError("forces differ from the CPU's by more than 1e-5 eV/A")


def section_md(log, args):
    from ase.build import molecule

    from tfn_md import TFNCalculator
    from tfn_md.ase.md import run_md

    steps = 20 if args.quick else 300
    runs = [("ethanol-gfn2", molecule("CH3CH2OH"), "nvt-langevin", 0.5, {}),
            ("cu-emt", cu_cell(2 if args.quick else 4, rattle=0.0), "npt-mtk", 2.0,
             {"pressure": 0.0})]
    for potential, atoms, ensemble, dt, extra in runs:
        atoms.calc = TFNCalculator(potential, device=args.device)
        s = run_md(atoms, steps, 300.0, dt, ensemble=ensemble, progress=False, **extra)
        drift = s.get("conserved_energy_drift_eV_per_atom_per_ps")
        log(f"  {potential:13s} {len(atoms):4d} atoms {ensemble:12s} {steps} steps: "
            f"{s['steps_per_second']:.1f} steps/s (compiling included), mean T "
            f"{s['mean_temperature_K']:.0f} K, conserved-energy drift {drift} eV/atom/ps")
        if not np.isfinite(s["final_potential_energy_eV"]):
            raise RuntimeError(f"{potential}: non-finite energy in MD")
        RESULTS.setdefault("md", []).append({"potential": potential, **{
            k: s[k] for k in ("steps_per_second", "mean_temperature_K")}})


def section_train(log, args, out: Path):
    from tfn_md.train import TrainConfig, Trainer

    cfg = TrainConfig.from_dict({
        "data": {"train": str(ROOT / "datasets/cu-emt_valid.h5"), "batch_size": 4,
                 "valid_fraction": 0.2},
        "model": {"channels": 8 if args.quick else 32, "l_max": 2, "layers": 2,
                  "cutoff": 5.0},
        "loss": {"energy": 1.0, "forces": 10.0, "stress": 100.0},
        "optim": {"epochs": 1, "lr": 5e-3},
        "run": {"out": str(out / "train"), "device": args.device, "dtype": "float32",
                "plots": False},
    })
    start = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    result = trainer.fit()
    seconds = time.perf_counter() - start
    log(f"  one epoch, {len(trainer.train_set)} Cu structures, on {args.device}: "
        f"{seconds:.1f} s; validation {json.dumps(result, default=float)[:200]}")
    RESULTS["train_seconds"] = seconds


def section_throughput(log, args):
    from tfn_md import TFN, TFNCalculator

    device = torch.device(args.device)
    model = TFN(species=["Cu"], channels=32, l_max=2, layers=2, cutoff=5.0)
    sizes = (3, 4) if args.quick else (12, 20, 30)  # 6912, 32000, 108000 atoms
    calls = 3 if args.quick else 10
    for n in sizes:
        atoms = cu_cell(n)
        calc = TFNCalculator(model, device=args.device, dtype=torch.float32)
        calc.engine._compile_chunks()  # what MD of a large system runs after 20 calls
        atoms.calc = calc
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rng = np.random.default_rng(0)
        times = []
        for k in range(3 + calls):  # 3 untimed: neighbour search, compiling the chunks
            atoms.positions += rng.normal(0.0, 1e-3, atoms.positions.shape)
            if k < 3:
                atoms.get_stress()
                continue
            sync(device)
            t = time.perf_counter()
            atoms.get_forces()
            atoms.get_stress()
            sync(device)
            times.append(time.perf_counter() - t)
        best, median = min(times), float(np.median(times))
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
        log(f"  {len(atoms):7d} atoms, E+F+S float32: {median * 1e3:9.1f} ms/call (median of "
            f"{calls}), {len(atoms) / median:,.0f} atom-steps/s (best {len(atoms) / best:,.0f}),"
            f" peak {peak:.2f} GiB")
        RESULTS.setdefault("throughput", []).append(
            {"atoms": len(atoms), "ms_per_call": median * 1e3,
             "atom_steps_per_s": len(atoms) / median, "peak_GiB": peak})
        del calc, atoms
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a rehearsal)")
    p.add_argument("--quick", action="store_true", help="small sizes (the CPU rehearsal)")
    p.add_argument("--budget", type=float, default=330.0,
                   help="seconds; sections left after it are skipped")
    p.add_argument("--only", default="", help="comma-separated sections to run (default all)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = Tee(args.out / "gpu_check.txt")
    start = time.perf_counter()
    failed = []
    if section_env(log, args):
        os.environ.setdefault("TFN_MD_CACHE", str(args.out / "cache"))  # a cold cache
        sections = [("tests", section_tests), ("agreement", section_agreement),
                    ("throughput", section_throughput), ("md", section_md),
                    ("train", lambda lg, a: section_train(lg, a, args.out))]
        only = [x for x in args.only.split(",") if x]
        for name, fn in sections:
            if only and name not in only:
                continue
            elapsed = time.perf_counter() - start
            if elapsed > args.budget:
                log(f"[{name}] skipped: {elapsed:.0f} s passed (budget {args.budget:.0f} s)")
                continue
            log(f"[{name}] (at {elapsed:.0f} s)")
            t = time.perf_counter()
            try:
                fn(log, args)
                log(f"[{name}] ok in {time.perf_counter() - t:.0f} s")
            except Exception as err:  # noqa: BLE001 (report and go on: one run shows all)
                failed.append(name)
                log(f"[{name}] FAILED in {time.perf_counter() - t:.0f} s: "
                    f"{type(err).__name__}: {err}")
    RESULTS["failed"] = failed
    RESULTS["seconds"] = time.perf_counter() - start
    (args.out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1, default=float))
    log(f"done in {RESULTS['seconds']:.0f} s; failed sections: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
