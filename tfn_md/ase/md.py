"""Molecular dynamics and relaxations with a TFN potential, through ASE.

``run_md`` runs one of the ensembles of :mod:`tfn_md.ase.ensembles` (NVE, Langevin, Bussi
and Nose-Hoover chain NVT, isotropic and full-cell MTK NPT) and writes, every
``interval`` steps, a trajectory frame (``.traj`` for ASE, ``ase gui``, OVITO; ``.xyz``
writes extended XYZ for VMD and others) and a row of the log beside it. Frames of
non-periodic systems carry the dipole (``atoms.get_dipole_moment()`` after ``ase.io.read``)
where the calculator has one (a potential with a dipole head, GFN2-xTB), the input of
``tfn-md spectrum``. Frames are
written as they come, so a killed run keeps what it wrote; :func:`read_restart` and
``run_md(..., start_step=...)`` continue it from its last frame with no frame lost and
none repeated. ``relax`` runs BFGS on the atoms (and the cell with ``cell=True``, through
``ase.filters.FrechetCellFilter``).

The log (whitespace-separated columns, a ``#`` header; ``numpy.loadtxt`` reads it):
step, time (ps), temperature (K), potential and total energy (eV), the ensemble's
conserved energy (eV) where it has one (NVE: E_tot; Bussi: E_tot minus the energy the
thermostat put in; Nose-Hoover and MTK: their extended energy), and for periodic systems
the pressure (GPa, with the kinetic term), volume (A^3) and cell lengths a, b, c (A).
"""

import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import Trajectory, read, write

from ..atomic import write_text_atomic
from .ensembles import GLOBAL_THERMOSTATS, make_dynamics

__all__ = ["log_path", "md_summary", "read_restart", "relax", "run_md"]

STEP = "md_step"  # atoms.info key of a frame's step number (ASE writes info to .traj/.xyz)


def log_path(trajectory: str | Path) -> Path:
    """The log beside a trajectory: ``md.traj`` -> ``md.log``."""
    return Path(trajectory).with_suffix(".log")


def _resolve(ensemble: str | None, friction: float | None) -> str:
    """Today's meaning of ``friction`` without an ensemble: 0 is NVE, else Langevin."""
    if ensemble is not None:
        return ensemble
    return "nve" if friction == 0 else "nvt-langevin"


def _conserved(dyn, atoms: Atoms, ensemble: str) -> float | None:
    if ensemble == "nve":
        return atoms.get_total_energy()
    if ensemble == "nvt-bussi":
        return atoms.get_total_energy() - dyn.transferred_energy
    if hasattr(dyn, "get_conserved_energy"):
        return float(dyn.get_conserved_energy())
    return None


def _columns(periodic: bool, conserved: bool) -> list[str]:
    cols = ["step", "time_ps", "T_K", "Epot_eV", "Etot_eV"]
    cols += ["Econs_eV"] if conserved else []
    cols += ["P_GPa", "volume_A3", "a_A", "b_A", "c_A"] if periodic else []
    return cols


def run_md(atoms: Atoms, steps: int, temperature: float = 300.0, timestep: float = 0.5,
           friction: float | None = None, trajectory: str | Path | None = None,
           interval: int = 10, seed: int = 0, progress: bool = True,
           ensemble: str | None = None, pressure: float | None = None,
           tdamp: float = 100.0, pdamp: float = 1000.0, log: str | Path | None = None,
           start_step: int = 0) -> dict:
    """Run ``steps`` MD steps of ``ensemble`` on ``atoms`` (which carry their calculator).

    Without ``ensemble``, ``friction`` keeps its old meaning: 0 is NVE, anything else (or
    None, 0.01 1/fs) Langevin NVT. ``temperature`` K, ``timestep`` fs, ``pressure`` GPa
    (NPT only, default 0), ``tdamp``/``pdamp`` fs (the thermostat's and the barostat's
    time constants). Velocities are drawn from Maxwell-Boltzmann at ``temperature`` with
    ``seed`` unless ``start_step`` > 0, which continues a run: the atoms' momenta and cell
    are kept, the step count goes on from ``start_step``, frames and log rows are appended,
    and the random stream is a new one (seeded by ``seed`` and ``start_step``).

    Every ``interval``-th step (counted from step 0 of the whole run) writes a frame to
    ``trajectory`` and a row to ``log`` (default: beside the trajectory, see
    :func:`log_path`). Returns the summary of :func:`md_summary`.
    """
    from ase.md import velocitydistribution as vd
    from tqdm import tqdm

    # ASE 3.29 renamed MaxwellBoltzmannDistribution (deprecated there)
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution

    ensemble = _resolve(ensemble, friction)
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be an integer >= 0 (got {steps!r})")
    if not (isinstance(interval, int) and interval >= 1):
        raise ValueError(f"interval must be an integer >= 1 (got {interval!r})")
    if start_step and start_step % interval:
        raise ValueError(f"start_step {start_step} is not a multiple of interval {interval}: "
                         "a run continues from one of its frames")
    rng = np.random.default_rng([seed, start_step] if start_step else seed)
    if start_step:
        if not atoms.has("momenta"):
            raise ValueError("continuing a run needs the atoms' momenta (the frame has none)")
    else:
        thermalize(atoms, temperature_K=temperature, rng=rng)
        if ensemble not in GLOBAL_THERMOSTATS:  # see tfn_md.ase.ensembles on why not these
            vd.Stationary(atoms)
    dyn = make_dynamics(atoms, ensemble, timestep, temperature, friction, pressure, tdamp,
                        pdamp, rng)
    periodic = bool(atoms.pbc.all())
    if log is None and trajectory is not None:
        log = log_path(trajectory)
    has_conserved = _conserved(dyn, atoms, ensemble) is not None
    columns = _columns(periodic, has_conserved)
    rows: list[list[float]] = []
    files = ExitStack()
    traj = None
    if trajectory is not None and Path(trajectory).suffix == ".traj":
        traj = files.enter_context(Trajectory(str(trajectory), "a" if start_step else "w",
                                              atoms))
    log_file = None
    if log is not None:  # line-buffered: a killed run keeps every row it wrote
        log_file = files.enter_context(open(log, "a" if start_step else "w", buffering=1))  # noqa: SIM115
        if not start_step:
            log_file.write(f"# {ensemble}, T {temperature} K, timestep {timestep} fs"
                           + (f", P {pressure or 0.0} GPa" if ensemble.startswith("npt") else "")
                           + "\n# " + " ".join(columns) + "\n")

    dipole = {"on": not atoms.pbc.any()}  # frames carry the dipole where the calculator has one

    def record():
        step = start_step + dyn.nsteps
        if dipole["on"]:
            try:
                atoms.get_dipole_moment()  # into the calculator's results: the frame keeps it
            except PropertyNotImplementedError:
                dipole["on"] = False
        row = [step, step * timestep / 1000.0, atoms.get_temperature(),
               atoms.get_potential_energy(), atoms.get_total_energy()]
        if has_conserved:
            row.append(_conserved(dyn, atoms, ensemble))
        if periodic:
            stress = atoms.get_stress(include_ideal_gas=True)
            row += [-stress[:3].mean() / units.GPa, atoms.get_volume(),
                    *atoms.cell.cellpar()[:3]]
        rows.append(row)
        if step == start_step and start_step:
            return  # the frame the run continues from is already written
        atoms.info[STEP] = step
        atoms.info["time_fs"] = step * timestep
        if log_file is not None:
            log_file.write(" ".join(f"{v:.10g}" for v in row) + "\n")
        if traj is not None:
            traj.write()
        elif trajectory is not None:
            write(str(trajectory), atoms, append=True)

    if trajectory is not None and traj is None and not start_step:
        Path(trajectory).unlink(missing_ok=True)  # a fresh run replaces an old file
    dyn.attach(record, interval=interval)
    bar = tqdm(total=steps, desc=ensemble, disable=not progress, mininterval=0.5, unit="step")
    dyn.attach(lambda: bar.update(1 if dyn.nsteps else 0), interval=1)
    start = time.perf_counter()
    with files:
        dyn.run(steps)
    seconds = time.perf_counter() - start
    bar.close()
    return md_summary(atoms, dict(zip(columns, np.array(rows).T.tolist())) if rows else {},
                      steps, seconds, trajectory, ensemble, log)


def md_summary(atoms: Atoms, log: dict, steps: int, seconds: float, trajectory,
               ensemble: str, log_file=None) -> dict:
    """Speed, means of T (and P, volume for periodic systems) and the drift of the
    ensemble's conserved energy (eV/atom over the run, and per ps) from the logged rows."""
    def mean(key):
        return float(np.mean(log[key])) if log.get(key) else None

    summary = {
        "ensemble": ensemble,
        "steps": steps,
        "simulated_ps": float(log["time_ps"][-1] - log["time_ps"][0]) if log else 0.0,
        "wall_seconds": seconds,
        "steps_per_second": steps / seconds if seconds else None,
        "mean_temperature_K": mean("T_K"),
        "final_potential_energy_eV": log["Epot_eV"][-1] if log else None,
    }
    if "P_GPa" in log:
        summary.update(mean_pressure_GPa=mean("P_GPa"), mean_volume_A3=mean("volume_A3"),
                       mean_cell_lengths_A=[mean(k) for k in ("a_A", "b_A", "c_A")])
    if log.get("Econs_eV"):
        drift = (log["Econs_eV"][-1] - log["Econs_eV"][0]) / len(atoms)
        span = summary["simulated_ps"]
        summary["conserved_energy_drift_eV_per_atom"] = drift
        summary["conserved_energy_drift_eV_per_atom_per_ps"] = drift / span if span else None
    summary["max_force_eV_per_A"] = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    summary["trajectory"] = None if trajectory is None else str(trajectory)
    summary["log"] = None if log_file is None else str(log_file)
    summary["rows"] = log
    return summary


def read_restart(trajectory: str | Path, log: str | Path | None = None) -> tuple[Atoms, int]:
    """The last frame of a ``run_md`` trajectory and its step, to continue the run from.

    Positions, momenta, cell and pbc come from the frame (a thermostat's or barostat's
    internal variables are not stored: they restart at zero). Log rows after that step
    (written by a run killed between its log row and its frame) are removed from ``log``
    (default: beside the trajectory), so the continued log repeats no row.
    """
    path = Path(trajectory)
    if not path.is_file():
        raise FileNotFoundError(f"--restart {path}: no such trajectory")
    try:
        atoms = read(path, index=-1)
    except Exception as err:
        raise ValueError(f"--restart {path}: not a readable trajectory ({err})") from err
    if STEP not in atoms.info:
        raise ValueError(f"--restart {path}: its last frame has no '{STEP}' (not written by "
                         "tfn-md md); cannot tell where the run stopped")
    if not atoms.has("momenta"):
        raise ValueError(f"--restart {path}: its last frame has no momenta")
    step = int(atoms.info[STEP])
    log = log_path(path) if log is None else Path(log)
    if log.is_file():
        keep = [line for line in log.read_text().splitlines(keepends=True)
                if line.startswith("#") or not line.strip() or int(float(line.split()[0])) <= step]
        write_text_atomic(log, "".join(keep))
    atoms.calc = None
    return atoms, step


def relax(atoms: Atoms, fmax: float = 0.01, steps: int = 1000, cell: bool = False,
          trajectory: str | Path | None = None) -> bool:
    """BFGS to ``fmax`` eV/A (and eV/A^3-scaled cell forces with ``cell=True``)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    target = FrechetCellFilter(atoms) if cell else atoms
    opt = BFGS(target, trajectory=None if trajectory is None else str(trajectory))
    return bool(opt.run(fmax=fmax, steps=steps))
