"""The IR spectrum of ethanol from MD with a potential and with GFN2-xTB itself, the same
protocol and seeds; and ase.vibrations.Infrared's harmonic intensities of both.

    python benchmarks/ir_ethanol.py run --method tfn [--potential ethanol-gfn2]
    python benchmarks/ir_ethanol.py run --method xtb       # (in parallel: one core each)
    python benchmarks/ir_ethanol.py compare [--plot potentials/ethanol-gfn2-ir.png]
    python benchmarks/ir_ethanol.py modes [--potential ethanol-gfn2]

Protocol (``run``), per seed: ethanol (``ase.build.molecule``), Langevin at 300 K (friction
0.01 1/fs) for ``--equilibrate`` ps, then NVE for ``--ps`` ps from that frame, timestep 0.5
fs, a frame every 2 steps (1 fs), through ``tfn_md.ase.md.run_md`` (the code of
``tfn-md md``): the frames carry the calculator's dipole. Seeds 5101-5105 are new (no
training or selection used them). With ``--shared-start`` both methods start their NVE runs
from the same frames (positions and momenta), the ends of GFN2-xTB's Langevin runs
(``start-<seed>.traj``, made once): the runs then share their total energies, which
otherwise scatter by a third between runs of a 9-atom molecule and with them the
intensities (the classical band area grows with the temperature).

``compare``: the IR spectra of both methods averaged over the seeds, in absolute units
(the same window and spacing: ``tfn_md.ase.spectra.spectra(normalise=False)``); per band
window (``WINDOWS``, cm^-1, set from the bands of ethanol's GFN2-xTB spectrum), the band
maximum and the integrated intensity of each method.

``modes``: each method's relaxed geometry (BFGS to 1e-4 eV/A), ``ase.vibrations.Infrared``
(central differences, 0.01 A); modes paired by the overlap of their mass-weighted
eigenvectors (Hungarian assignment on |<e_i|e_j>|); for the reference's 10 strongest modes,
frequency and intensity of both.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

SEEDS = (5101, 5102, 5103, 5104, 5105)
# band windows, cm^-1: skeletal C-C-O / CH3 rock; C-O and C-C stretches; CH/OH bends;
# C-H stretches; O-H stretch
WINDOWS = ((500, 950), (950, 1150), (1150, 1550), (2700, 3200), (3400, 3900))


def calculator(method: str, potential: str):
    if method == "xtb":
        from tfn_md.data.sources import xtb_calculator

        return xtb_calculator()
    from tfn_md.ase.calculator import TFNCalculator

    return TFNCalculator(potential)


def run(args) -> None:
    from ase.build import molecule
    from ase.io import read, write

    from tfn_md.ase.md import run_md

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    equilibrate = round(args.equilibrate * 2000)  # 0.5 fs steps
    for seed in args.seeds:
        path = out / f"{args.method}-{seed}.traj"
        if path.exists() and not args.force:
            print(f"{path} exists: skipped")
            continue
        if args.shared_start:
            start = out / f"start-{seed}.traj"
            if not start.exists():
                atoms = molecule("CH3CH2OH")
                atoms.calc = calculator("xtb", args.potential)
                run_md(atoms, equilibrate, temperature=300.0, timestep=0.5, friction=0.01,
                       seed=seed, progress=False)
                atoms.calc = None
                write(out / f".{start.name}", atoms)
                (out / f".{start.name}").replace(start)
            atoms = read(start)
            atoms.calc = calculator(args.method, args.potential)
        else:
            atoms = molecule("CH3CH2OH")
            atoms.calc = calculator(args.method, args.potential)
            run_md(atoms, equilibrate, temperature=300.0, timestep=0.5, friction=0.01,
                   seed=seed, progress=False)
        tmp = out / f".{path.name}"
        tmp.unlink(missing_ok=True)
        summary = run_md(atoms, round(args.ps * 2000), temperature=300.0, timestep=0.5,
                         ensemble="nve", trajectory=tmp, interval=2, seed=seed,
                         start_step=equilibrate, progress=False)
        tmp.replace(path)
        Path(str(tmp.with_suffix(".log"))).replace(path.with_suffix(".log"))
        print(json.dumps({"trajectory": str(path), "mean_temperature_K":
                          summary.get("mean_temperature_K"), "steps_per_s":
                          summary.get("steps_per_second"), "conserved_energy_drift_eV_per_atom_per_ps":
                          summary.get("conserved_energy_drift_eV_per_atom_per_ps")}))


def bands(w, s):
    """[(maximum cm^-1, integral)] per window of the spectrum ``s`` on the grid ``w``."""
    out = []
    for lo, hi in WINDOWS:
        keep = (w >= lo) & (w <= hi)
        out.append((float(w[keep][np.argmax(s[keep])]), float(np.trapezoid(s[keep], w[keep]))))
    return out


def compare(args) -> None:
    from tfn_md.ase.spectra import spectra

    out = Path(args.dir)
    spec = {}
    for method in ("tfn", "xtb"):
        paths = [out / f"{method}-{seed}.traj" for seed in args.seeds]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise SystemExit(f"missing trajectories (run them first): {missing}")
        r = spectra(paths, normalise=False, max_lag_fs=args.max_lag)
        spec[method] = (r["wavenumber_cm-1"], r["ir"])
        print(f"{method}: {len(paths)} trajectories, frames {r['frames']}, "
              f"spacing {r['dt_fs']} fs")
    w = spec["xtb"][0]
    s_tfn = np.interp(w, *spec["tfn"])
    s_xtb = spec["xtb"][1]
    print(f"\nIR bands (window {args.max_lag} fs Hann), averaged over seeds "
          f"{list(args.seeds)}; intensity (e*A/fs)^2 fs cm^-1")
    print("| window (cm^-1) | max GFN2-xTB | max TFN | shift (cm^-1) | integral GFN2-xTB | "
          "integral TFN | ratio |")
    print("|---|---|---|---|---|---|---|")
    worst_shift, worst_ratio = 0.0, 0.0
    for (lo, hi), (mx, ix), (mt, it) in zip(WINDOWS, bands(w, s_xtb), bands(w, s_tfn)):
        ratio = it / ix
        worst_shift = max(worst_shift, abs(mt - mx))
        worst_ratio = max(worst_ratio, abs(ratio - 1))
        print(f"| {lo}-{hi} | {mx:.0f} | {mt:.0f} | {mt - mx:+.0f} | {ix:.4g} | {it:.4g} | "
              f"{ratio:.3f} |")
    print(f"worst band shift {worst_shift:.0f} cm^-1, worst integral {100 * worst_ratio:.1f} %")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.6), dpi=120)
        scale = s_xtb.max()
        ax.plot(w, s_xtb / scale, label="GFN2-xTB (tblite) MD", color="k", lw=1.2)
        ax.plot(w, s_tfn / scale, label=f"{args.potential} MD", color="C1", lw=1.0)
        for lo, hi in WINDOWS:
            ax.axvspan(lo, hi, color="0.93", zorder=0)
        ax.set_xlim(400, 4000)
        ax.set_xlabel("wavenumber (cm$^{-1}$)")
        ax.set_ylabel("IR intensity (relative to GFN2-xTB's maximum)")
        ax.set_title(f"ethanol, 300 K: {len(args.seeds)} NVE runs of {args.ps:g} ps each "
                     "(band windows shaded)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"plot: {args.plot}")


def harmonic_ir(method: str, potential: str):
    """(frequencies cm^-1 [m], intensities (D/A)^2 amu^-1 [m], mass-weighted modes [m, 3n])
    of the relaxed molecule, real modes only (the 6 lowest, rotations and translations, are
    dropped)."""
    from ase.build import molecule
    from ase.optimize import BFGS
    from ase.vibrations import Infrared

    atoms = molecule("CH3CH2OH")
    atoms.calc = calculator(method, potential)
    BFGS(atoms, logfile=None).run(fmax=1e-4, steps=2000)
    with tempfile.TemporaryDirectory() as tmp:
        ir = Infrared(atoms, name=os.path.join(tmp, "ir"), delta=0.01, nfree=2)
        ir.run()
        with open(os.devnull, "w") as sink:
            ir.summary(log=sink)  # computes the intensities
        freq = np.real(ir.get_frequencies())
        intensities = np.asarray(ir.intensities)
        modes = np.array([ir.get_vibrations().get_modes(all_atoms=True)[i].ravel()
                          for i in range(len(freq))])
    m = np.sqrt(np.repeat(atoms.get_masses(), 3))
    modes = modes * m  # mass-weighted, then normalised
    modes /= np.linalg.norm(modes, axis=1, keepdims=True)
    keep = np.argsort(np.abs(freq))[6:]
    keep = keep[np.argsort(freq[keep])]
    return freq[keep], intensities[keep], modes[keep]


def modes(args) -> None:
    from scipy.optimize import linear_sum_assignment

    fx, ix, vx = harmonic_ir("xtb", args.potential)
    ft, it, vt = harmonic_ir("tfn", args.potential)
    overlap = np.abs(vx @ vt.T)
    rows, cols = linear_sum_assignment(-overlap)
    pair = dict(zip(rows, cols))
    strongest = np.argsort(-ix)[:10]
    print("ase.vibrations.Infrared, relaxed ethanol; the 10 strongest GFN2-xTB modes, "
          "paired by eigenvector overlap")
    print("| GFN2-xTB cm^-1 | TFN cm^-1 | overlap | I GFN2-xTB (D/A)^2/amu | I TFN | ratio |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for i in sorted(strongest, key=lambda i: fx[i]):
        j = pair[i]
        ratio = it[j] / ix[i]
        worst = max(worst, abs(ratio - 1))
        print(f"| {fx[i]:.1f} | {ft[j]:.1f} | {overlap[i, j]:.3f} | {ix[i]:.4f} | {it[j]:.4f} "
              f"| {ratio:.3f} |")
    print(f"worst intensity deviation {100 * worst:.1f} %")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", choices=("run", "compare", "modes"))
    p.add_argument("--method", choices=("tfn", "xtb"), default="tfn")
    p.add_argument("--potential", default="ethanol-gfn2")
    p.add_argument("--dir", default="runs/ir")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--ps", type=float, default=20.0, help="NVE length per seed, ps")
    p.add_argument("--equilibrate", type=float, default=2.0, help="Langevin ps before NVE")
    p.add_argument("--max-lag", type=float, default=2000.0,
                   help="autocorrelation window, fs (resolution ~ 1/window)")
    p.add_argument("--plot", default=None, help="compare: PNG with both spectra")
    p.add_argument("--force", action="store_true", help="run: redo existing trajectories")
    p.add_argument("--shared-start", action="store_true",
                   help="run: NVE from the same GFN2-xTB-equilibrated frames for both methods")
    args = p.parse_args()
    {"run": run, "compare": compare, "modes": modes}[args.task](args)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    main()
