"""Molecular dynamics and relaxations with a TFN potential, through ASE.

``run_md`` runs Langevin NVT (or NVE VelocityVerlet with ``friction=0``) and writes an
ASE trajectory (read by ``ase.io.read``, ``ase gui``, OVITO; ``.xyz`` writes extended
XYZ for VMD and others); ``relax`` runs BFGS on the atoms (and the cell with
``cell=True``, through ``ase.filters.FrechetCellFilter``).
"""

import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import Trajectory, write

__all__ = ["md_summary", "relax", "run_md"]


def run_md(atoms: Atoms, steps: int, temperature: float = 300.0, timestep: float = 0.5,
           friction: float = 0.01, trajectory: str | Path | None = None, interval: int = 10,
           seed: int = 0, progress: bool = True) -> dict:
    """Langevin NVT at ``temperature`` K (friction in 1/fs; 0 gives NVE), ``timestep`` fs.
    Returns a summary dict and writes every ``interval``-th frame to ``trajectory``."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    if friction > 0:
        dyn = Langevin(atoms, timestep * units.fs, temperature_K=temperature,
                       friction=friction / units.fs, rng=rng, fixcm=False)
    else:
        dyn = VelocityVerlet(atoms, timestep * units.fs)
    frames: list[Atoms] = []
    log = {"time_fs": [], "temperature_K": [], "epot_eV": [], "etot_eV": []}
    traj = None
    if trajectory is not None and Path(trajectory).suffix == ".traj":
        traj = Trajectory(str(trajectory), "w", atoms)

    def record():
        log["time_fs"].append(dyn.nsteps * timestep)
        log["temperature_K"].append(atoms.get_temperature())
        log["epot_eV"].append(atoms.get_potential_energy())
        log["etot_eV"].append(atoms.get_total_energy())
        if traj is not None:
            traj.write()
        elif trajectory is not None:
            frames.append(atoms.copy())

    dyn.attach(record, interval=interval)
    bar = tqdm(total=steps, desc="md", disable=not progress, mininterval=0.5, unit="step")
    dyn.attach(lambda: bar.update(1 if dyn.nsteps else 0), interval=1)
    start = time.perf_counter()
    dyn.run(steps)
    seconds = time.perf_counter() - start
    bar.close()
    if traj is not None:
        traj.close()
    elif trajectory is not None:
        write(str(trajectory), frames)
    return md_summary(atoms, log, steps, seconds, trajectory, nve=friction <= 0)


def md_summary(atoms: Atoms, log: dict, steps: int, seconds: float, trajectory,
               nve: bool) -> dict:
    temps = np.array(log["temperature_K"])
    return {
        "steps": steps,
        "simulated_ps": steps and log["time_fs"][-1] / 1000.0,
        "wall_seconds": seconds,
        "steps_per_second": steps / seconds if seconds else None,
        "mean_temperature_K": float(temps.mean()) if len(temps) else None,
        "final_potential_energy_eV": log["epot_eV"][-1] if log["epot_eV"] else None,
        # a conserved quantity only without the thermostat
        "total_energy_drift_eV_per_atom": (log["etot_eV"][-1] - log["etot_eV"][0]) / len(atoms)
        if nve and log["etot_eV"] else None,
        "max_force_eV_per_A": float(np.linalg.norm(atoms.get_forces(), axis=1).max()),
        "trajectory": None if trajectory is None else str(trajectory),
        "log": log,
    }


def relax(atoms: Atoms, fmax: float = 0.01, steps: int = 1000, cell: bool = False,
          trajectory: str | Path | None = None) -> bool:
    """BFGS to ``fmax`` eV/A (and eV/A^3-scaled cell forces with ``cell=True``)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    target = FrechetCellFilter(atoms) if cell else atoms
    opt = BFGS(target, trajectory=None if trajectory is None else str(trajectory))
    return bool(opt.run(fmax=fmax, steps=steps))
