"""``tfn-md md`` and ``tfn-md relax``: run a shipped or trained potential on a structure."""

import argparse
import json
from pathlib import Path

__all__ = ["add_simulate_parsers"]


def _structure_args(p, required=True):
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--molecule", help="ase.build.molecule name, e.g. CH3CH2OH")
    src.add_argument("--structure", type=Path, help="any file ase.io.read reads (last frame)")
    p.add_argument("--potential", required=True,
                   help="shipped potential name (e.g. ethanol-gfn2) or checkpoint path")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"])


MD_EPILOG = """examples:
  tfn-md md --potential ethanol-gfn2 --molecule CH3CH2OH --steps 2000
  tfn-md md --potential cu-emt --structure cu.xyz --ensemble npt-mtk --temperature 300 \\
      --pressure 0 --timestep 2 --steps 5000 -o cu.traj
  tfn-md md --potential cu-emt --restart cu.traj --ensemble npt-mtk --temperature 300 \\
      --pressure 0 --timestep 2 --steps 5000 -o cu.traj     # continue a killed run

--restart TRAJ continues from the last frame of a trajectory that tfn-md md wrote: its
positions, momenta, cell and step number. --steps is the total of the whole run, so the
continued run makes the steps left; with -o the same file, frames and log rows are appended
and none is lost or repeated. Not carried over: the thermostat's and barostat's internal
variables (Nose-Hoover chain and MTK momenta start at zero again, as at a fresh start), the
Bussi thermostat's count of transferred energy, and the random stream (a new one, from
--seed and the step). Give the same ensemble and settings again."""


def add_simulate_parsers(subparsers) -> None:
    from .ensembles import ENSEMBLES

    p = subparsers.add_parser(
        "md", help="molecular dynamics with a TFN potential (NVE, NVT, NPT)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="MD with a TFN potential through ASE's integrators: nve (VelocityVerlet), "
        "nvt-langevin, nvt-bussi (stochastic velocity rescaling), nvt-nhc (Nose-Hoover "
        "chain), npt-mtk (isotropic MTK barostat) and npt-mtk-full (MTK, the whole cell). "
        "Writes a trajectory (.traj for ASE, .xyz for extended XYZ) and a log beside it "
        "(.log: step, time, T, E_pot, E_tot, conserved energy, and P, volume, cell lengths "
        "for periodic systems), shows a progress bar and prints a summary (JSON).",
        epilog=MD_EPILOG)
    _structure_args(p, required=False)
    p.add_argument("--restart", type=Path, metavar="TRAJ",
                   help="continue the run whose trajectory this is (see below)")
    p.add_argument("--ensemble", choices=ENSEMBLES, default=None,
                   help="default nvt-langevin (nve with --friction 0)")
    p.add_argument("--steps", type=int, default=1000, help="steps of the whole run")
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--friction", type=float, default=None,
                   help="Langevin friction, 1/fs (default 0.01; 0: NVE)")
    p.add_argument("--pressure", type=float, default=None,
                   help="npt-*: external pressure, GPa (default 0)")
    p.add_argument("--tdamp", type=float, default=100.0,
                   help="nvt-bussi, nvt-nhc, npt-*: thermostat time constant, fs")
    p.add_argument("--pdamp", type=float, default=1000.0,
                   help="npt-*: barostat time constant, fs")
    p.add_argument("--interval", type=int, default=10, help="steps between frames/log rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, default=Path("md.traj"))
    p.add_argument("--log", type=Path, default=None,
                   help="log file (default: the output's name with .log)")
    p.set_defaults(func=_md)

    sp = subparsers.add_parser(
        "spectrum", help="IR spectrum and vibrational density of states from MD trajectories",
        description="The IR spectrum from the dipole autocorrelation (where the frames have "
        "dipoles) and the vibrational density of states from the velocities (where they have "
        "momenta), averaged over the trajectories (tfn_md.ase.spectra states the maths). "
        "Writes OUT.csv (wavenumber in cm^-1, intensities normalised to unit area) and "
        "OUT.png. Frames must be at most 2 fs apart (else overtones alias below 4000 cm^-1).",
        epilog="example: tfn-md spectrum run1.traj run2.traj -o ir --temperature 300")
    sp.add_argument("trajectories", nargs="+", type=Path)
    sp.add_argument("-o", "--output", type=Path, default=Path("spectrum"),
                    help="output stem: OUT.csv and OUT.png")
    sp.add_argument("--dt", type=float, default=None,
                    help="frame spacing, fs (default: from the frames' time_fs)")
    sp.add_argument("--temperature", type=float, default=None,
                    help="K: apply the harmonic quantum correction to the IR spectrum")
    sp.add_argument("--max-lag", type=float, default=None,
                    help="fs: the autocorrelation window (default a third of the run)")
    sp.add_argument("--up-to", type=float, default=4000.0, help="cm^-1: highest wavenumber")
    sp.set_defaults(func=_spectrum)

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
    from .calculator import TFNCalculator
    from .md import read_restart, run_md

    if args.restart is not None:
        if args.molecule or args.structure:
            raise ValueError("--restart takes the structure from the trajectory: drop "
                             "--molecule/--structure")
        atoms, done = read_restart(args.restart, _log(args, args.restart))
        if done >= args.steps:
            raise ValueError(f"--restart {args.restart}: the run already made {done} of "
                             f"--steps {args.steps}; raise --steps to run longer")
        if args.output.resolve() != args.restart.resolve():
            raise ValueError(f"--restart {args.restart} with -o {args.output}: a continued run "
                             "appends to its own trajectory; give -o the same file")
        atoms.calc = TFNCalculator(args.potential, device=args.device, dtype=args.dtype)
    else:
        if not (args.molecule or args.structure):
            raise ValueError("give the structure: --molecule NAME, --structure FILE or "
                             "--restart TRAJ")
        atoms, done = _load(args), 0
    summary = run_md(atoms, args.steps - done, args.temperature, args.timestep,
                     args.friction, args.output, args.interval, args.seed,
                     ensemble=args.ensemble, pressure=args.pressure, tdamp=args.tdamp,
                     pdamp=args.pdamp, log=_log(args, args.output), start_step=done)
    summary.pop("rows")
    print(json.dumps(summary, indent=1, default=float))
    return 0


def _log(args, trajectory: Path) -> Path:
    from .md import log_path

    return args.log if args.log is not None else log_path(trajectory)


def _spectrum(args: argparse.Namespace) -> int:
    import numpy as np

    from ..atomic import atomic_path
    from .spectra import spectra

    out = spectra(args.trajectories, args.dt, args.temperature, args.max_lag, args.up_to)
    names = [k for k in ("ir", "vdos") if k in out]
    table = np.column_stack([out["wavenumber_cm-1"]] + [out[k] for k in names])
    with atomic_path(args.output.with_suffix(".csv")) as tmp:
        np.savetxt(tmp, table, delimiter=",", fmt="%.6g",
                   header=",".join(["wavenumber_cm-1", *names]), comments="")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plot = None
    else:
        fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
        for k in names:
            ax.plot(out["wavenumber_cm-1"], out[k], label={"ir": "IR (dipole)",
                                                          "vdos": "VDOS (velocities)"}[k])
        ax.set_xlabel("wavenumber (cm$^{-1}$)")
        ax.set_ylabel("intensity (normalised)")
        ax.legend()
        fig.tight_layout()
        plot = args.output.with_suffix(".png")
        with atomic_path(plot) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
    print(json.dumps({"trajectories": len(args.trajectories), "frames": out["frames"],
                      "frame_spacing_fs": out["dt_fs"], "spectra": names,
                      "csv": str(args.output.with_suffix(".csv")),
                      "png": None if plot is None else str(plot)}, indent=1))
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
