"""Energy conservation of NVE in LAMMPS against ASE's VelocityVerlet, same start.

    eval "$(examples/lammps/build_lammps.sh --env)"
    OMP_NUM_THREADS=1 python benchmarks/nve_lammps.py [--steps 2000] [--dtype float32]

fcc Cu 864 atoms (6 x 6 x 6 cubic cells) rattled by 0.05 A, Maxwell-Boltzmann velocities
at 600 K (seed 0), 1 fs steps, shipped cu-emt potential. LAMMPS (pair_style mliap unified,
fix nve) and ASE (VelocityVerlet with TFNCalculator) run from the same positions and
velocities in two processes at once; printed: the fluctuation (standard deviation) and
the drift (last minus first) of the total energy per atom over the run, sampled every
10 steps.
"""

import argparse
import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def start_state():
    from ase.build import bulk
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((6, 6, 6))
    atoms.rattle(0.05, seed=0)
    atoms.wrap()
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
    return atoms


def run_lammps(steps, dtype):
    sys.path.insert(0, str(HERE.parent.parent / "tests"))
    import lammps_driver
    from ase import units

    from tfn_md.lammps import export_lammps

    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"nve-cu-emt-{dtype}.mliap"
    export_lammps("cu-emt", path, dtype=dtype, compile=True)
    atoms = start_state()
    lmp = lammps_driver.start()
    lammps_driver.setup(lmp, atoms, path, ["Cu"], 2, 5.0)
    v = atoms.get_velocities() * 1000 * units.fs  # A/ps
    lmp.scatter_atoms("v", 1, 3, (ctypes.c_double * v.size)(*v.ravel()))
    lmp.command("timestep 0.001")
    lmp.command("fix nve all nve")
    lmp.command("thermo 10")
    lmp.command("thermo_style custom step etotal")
    lmp.command("run 0")  # tallies the starting energy
    energies = []
    for _ in range(steps // 10 + 1):
        energies.append(lmp.get_thermo("etotal"))
        lmp.command("run 10 pre no post no")
    lmp.close()
    return energies[: steps // 10 + 1]


def run_ase(steps, dtype):
    import torch
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from tfn_md import TFNCalculator

    atoms = start_state()
    atoms.calc = TFNCalculator("cu-emt", dtype=getattr(torch, dtype))
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    energies = [atoms.get_total_energy()]
    for _ in range(steps // 10):
        dyn.run(10)
        energies.append(atoms.get_total_energy())
    return energies


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--engine", choices=["lammps", "ase"])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.engine:
        run = run_lammps if args.engine == "lammps" else run_ase
        print(json.dumps(run(args.steps, args.dtype)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {engine: subprocess.Popen(
        [sys.executable, str(HERE), "--engine", engine, "--steps", str(args.steps),
         "--dtype", args.dtype], stdout=subprocess.PIPE, text=True, env=env)
        for engine in ("lammps", "ase")}
    print(f"NVE, Cu 864, 1 fs, {args.steps} steps, {args.dtype}; total energy per atom (eV)")
    print("| engine | std | drift (last - first) | max - min |")
    print("|---|---|---|---|")
    for engine, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode:
            for other in procs.values():
                other.kill()
            raise SystemExit(f"{engine} run failed")
        e = np.array(json.loads(out.strip().splitlines()[-1])) / 864
        print(f"| {engine} | {e.std():.2e} | {e[-1] - e[0]:+.2e} | {np.ptp(e):.2e} |")


if __name__ == "__main__":
    main()
