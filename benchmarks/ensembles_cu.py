"""Are the ensembles of ``tfn-md md`` right? NPT lattice constants against the reference's
own NPT, and the kinetic-energy statistics of the NVT thermostats against the canonical ones.

    python benchmarks/ensembles_cu.py npt --temperature 300 --ps 10 [--out runs/ens]
    python benchmarks/ensembles_cu.py nvt --ensemble nvt-bussi --ps 20 [--out runs/ens]

Both on fcc Cu, 4x4x4 cubic cells (256 atoms), from EMT's lattice constant, timestep 5 fs,
through :func:`tfn_md.ase.md.run_md` (the code behind ``tfn-md md``).

``npt``: ``npt-mtk`` at 0 GPa with ``cu-emt`` and with ASE's EMT (same seed, same settings);
the mean lattice constant a = <V>^(1/3) / 4 over the run after its first ``--skip`` ps, for
each, and their difference. Thermal expansion from two runs: a(900)/a(300) - 1.

``nvt``: ``--ensemble`` with ``cu-emt`` (``analyse --log FILE`` redoes the statistics of
a run's log); the kinetic energy K = (3N/2) k_B T_inst every 5th
step after ``--skip`` ps against the canonical distribution of 3N momenta (the global
thermostats keep the centre-of-mass momentum, see :mod:`tfn_md.ase.ensembles`):
<K> = (3N/2) k_B T and Var K = (3N/2) (k_B T)^2. Standard errors from the run's own
autocorrelation: SE = sqrt(Var x * 2 tau / n), tau the integrated autocorrelation time of
the series (x = K for the mean, x = (K - <K>)^2 for the variance) with Sokal's window
(the smallest W >= 5 tau(W)), or from 10 block means where that is larger.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT

from tfn_md import TFNCalculator
from tfn_md.ase.md import run_md

N_REPEAT = 4


def cell(a: float = 3.5897):
    return bulk("Cu", "fcc", a=a, cubic=True) * (N_REPEAT, N_REPEAT, N_REPEAT)


def tau_int(x: np.ndarray) -> float:
    """Integrated autocorrelation time (in samples), Sokal's automatic window."""
    x = x - x.mean()
    n = len(x)
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n] / (x.var() * n)
    tau = 0.5
    for w in range(1, n):
        tau += acf[w]
        if w >= 5 * tau:
            break
    return max(tau, 0.5)


def mean_and_se(x: np.ndarray) -> tuple[float, float, float]:
    """Mean, its standard error and tau (samples). The SE is the larger of the
    autocorrelation estimate and the spread of the means of 10 blocks / sqrt(10)."""
    tau = tau_int(x)
    blocks = np.array([b.mean() for b in np.array_split(x, 10)])
    se = max(np.sqrt(x.var() * 2 * tau / len(x)), blocks.std(ddof=1) / np.sqrt(10))
    return float(x.mean()), float(se), tau


def run(calc, ensemble, temperature, ps, timestep, seed, out, interval, **kw):
    atoms = cell()
    atoms.calc = calc
    steps = int(round(ps * 1000 / timestep))
    return run_md(atoms, steps, temperature, timestep, trajectory=out, interval=interval,
                  seed=seed, ensemble=ensemble, progress=False, **kw)


def npt(args):
    results = {}
    for name, calc in (("cu-emt", TFNCalculator("cu-emt")), ("EMT", EMT())):
        s = run(calc, "npt-mtk", args.temperature, args.ps, args.timestep, args.seed,
                f"{args.out}/npt-{name}-{args.temperature:g}K.traj", 10, pressure=0.0,
                pdamp=args.pdamp)
        rows = s["rows"]
        keep = np.array(rows["time_ps"]) >= args.skip
        a = np.array(rows["volume_A3"])[keep] ** (1 / 3) / N_REPEAT
        mean, se, tau = mean_and_se(a)
        results[name] = {"a_A": mean, "se_A": se, "mean_T_K": float(np.mean(
            np.array(rows["T_K"])[keep])), "mean_P_GPa": float(np.mean(
                np.array(rows["P_GPa"])[keep])), "steps_per_s": s["steps_per_second"]}
        print(name, json.dumps(results[name]), flush=True)
    d = results["cu-emt"]["a_A"] / results["EMT"]["a_A"] - 1
    print(f"T {args.temperature:g} K, {args.ps:g} ps (first {args.skip:g} ps skipped): "
          f"a(cu-emt) {results['cu-emt']['a_A']:.5f} A, a(EMT) {results['EMT']['a_A']:.5f} A,"
          f" difference {100 * d:+.3f} %")
    Path(f"{args.out}/npt-{args.temperature:g}K.json").write_text(json.dumps(results))


def nvt(args):
    s = run(TFNCalculator("cu-emt"), args.ensemble, args.temperature, args.ps, args.timestep,
            args.seed, f"{args.out}/{args.ensemble}.traj", 5, tdamp=args.tdamp)
    print(f"  steps/s {s['steps_per_second']:.2f}; conserved-energy drift "
          f"{s.get('conserved_energy_drift_eV_per_atom_per_ps')} eV/atom/ps", flush=True)
    kinetic_statistics(f"{args.out}/{args.ensemble}.log", args)


def kinetic_statistics(log, args):
    """<K> and Var K of the logged temperatures against the canonical values."""
    rows = np.loadtxt(log)
    n = len(cell())
    keep = rows[:, 1] >= args.skip
    kinetic = 1.5 * n * units.kB * rows[keep, 2]
    dt = (rows[1, 1] - rows[0, 1]) * 1000
    kt = units.kB * args.temperature
    mean, se_mean, tau = mean_and_se(kinetic)
    var = kinetic.var()
    _, se_var, tau_var = mean_and_se((kinetic - mean) ** 2)
    want_mean, want_var = 1.5 * n * kt, 1.5 * n * kt ** 2
    print(f"{log}: {n} atoms, {args.temperature:g} K, {rows[-1, 1]:g} ps (first "
          f"{args.skip:g} ps skipped, {keep.sum()} samples every {dt:g} fs, tau "
          f"{tau * dt:.0f} fs, {tau_var * dt:.0f} fs):")
    print(f"  <K>   {mean:.4f} eV   canonical {want_mean:.4f}  SE {se_mean:.4f}  "
          f"deviation {(mean - want_mean) / se_mean:+.2f} SE")
    print(f"  Var K {var:.5f} eV^2 canonical {want_var:.5f}  SE {se_var:.5f}  "
          f"deviation {(var - want_var) / se_var:+.2f} SE", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["npt", "nvt", "analyse"],
                   help="analyse: the kinetic statistics of an existing --log")
    p.add_argument("--log", help="analyse: a log of tfn-md md")
    p.add_argument("--ensemble", default="nvt-bussi", choices=["nvt-bussi", "nvt-nhc"])
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--ps", type=float, default=10.0)
    p.add_argument("--skip", type=float, default=2.0, help="ps of equilibration not counted")
    p.add_argument("--timestep", type=float, default=5.0, help="fs")
    p.add_argument("--tdamp", type=float, default=100.0, help="fs")
    p.add_argument("--pdamp", type=float, default=1000.0, help="fs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/ensembles")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.what == "analyse":
        kinetic_statistics(args.log, args)
    else:
        npt(args) if args.what == "npt" else nvt(args)


if __name__ == "__main__":
    main()
