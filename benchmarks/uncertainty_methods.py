"""Which energy uncertainty flags the unknown? Four approaches, one potential, the same data.

    python benchmarks/uncertainty_methods.py [--potential ethanol-gfn2]
        [--train datasets/ethanol-gfn2_train.h5] [--calibration datasets/ethanol-gfn2_val.h5]
        [--molecule CH3CH2OH] [--reference GFN2-xTB] [--test datasets/ethanol-gfn2_indep.h5]
        [--plot scans_uncertainty.png]

Every approach is a function sigma(f) of the pooled readout inputs f = sum_i (z_i -
z_i,isolated) [c] of a structure (what the energy is linear in), scaled by one factor
alpha fitted to the energy errors of the calibration structures (Gaussian NLL):

* ``heads``: the shallow ensemble's energy spread, std_k scale (w_k - w̄) · f (as shipped);
* ``heads-centred``: the same on f - sum_i mu_Zi, mu per element fitted to the training f
  by least squares (the constant offset between heads removed);
* ``llpr``: last-layer prediction rigidity, sqrt(f^T (F^T F + varsigma^2 I)^-1 f)
  (:func:`tfn_md.train.uncertainty.calibrate_llpr`);
* ``distance``: the Mahalanobis distance of (f - sum_i mu_Zi) / N from the training set's.

Judged on data of their own (the choice is made on these): Spearman of sigma with the
absolute energy error on the calibration structures, and rigid bond stretches (to 1.6x)
and atoms pushed together (to 0.4x) from the reference's minimum, each geometry
labelled by the reference: which geometries with an energy error above 100 meV exceed
the flag threshold, the 99th percentile of sigma on the calibration structures (or, with
``--llpr-threshold``, the potential's own calibration and threshold for ``llpr``). The
independent test trajectories (``--test``) are scored last, after the choice, and only
reported.
"""

import argparse

import numpy as np
import torch

from tfn_md import keys
from tfn_md.check.molecule import bonds, contact_scans, relaxed, stretch_scans
from tfn_md.checkpoint import load_potential
from tfn_md.data.loader import GraphDataset
from tfn_md.data.sources import molecule_or_file
from tfn_md.data.writer import write_atoms
from tfn_md.learn.reference import reference_factory
from tfn_md.train.uncertainty import calibrate_llpr, readout_statistics, spearman

ERROR = 0.1  # eV: geometries with a larger energy error must be flagged
QUANTILE = 0.99  # the flag threshold: this quantile of sigma on the calibration data


def counts(dataset, species):
    """Element counts [B, S] of a GraphDataset's structures."""
    z = [np.asarray(dataset.h5.get_arrays(int(i))[keys.NUMBERS]) for i in dataset.indices]
    index = {s: k for k, s in enumerate(species)}
    from ase.data import chemical_symbols

    out = np.zeros((len(z), len(species)))
    for b, numbers in enumerate(z):
        for n in numbers:
            out[b, index[chemical_symbols[n]]] += 1
    return out


def methods(model, train, train_counts):
    """name -> sigma(stats, counts) (unscaled) for the four approaches."""
    w = model.energy_readout.weight.detach().double().numpy()  # [K, c]
    dev = float(model.scale) * (w - w.mean(0))  # [K, c]
    mu = np.linalg.lstsq(train_counts, train["pooled"], rcond=None)[0]  # [S, c]
    centred = (train["pooled"] - train_counts @ mu) / train["n_atoms"][:, None]
    mean, cov = centred.mean(0), np.cov(centred.T)
    precision = np.linalg.pinv(cov + 1e-8 * np.trace(cov) / len(cov) * np.eye(len(cov)))
    cov_llpr = model.readout_covariance.double().numpy()

    def distance(s, c):
        d = (s["pooled"] - c @ mu) / s["n_atoms"][:, None] - mean
        return np.sqrt(np.einsum("bc,cd,bd->b", d, precision, d))

    return {
        "heads": lambda s, c: (s["pooled"] @ dev.T).std(1),
        "heads-centred": lambda s, c: ((s["pooled"] - c @ mu) @ dev.T).std(1),
        "llpr": lambda s, c: np.sqrt(np.einsum("bc,cd,bd->b", s["pooled"], cov_llpr,
                                               s["pooled"])),
        "distance": distance,
    }


def fit_alpha(sigma, error):
    """The factor a minimising the Gaussian NLL of ``error`` with standard deviation a sigma."""
    return float(np.sqrt(np.mean(error**2 / np.maximum(sigma, 1e-300) ** 2)))


def nll(sigma, error):
    return float(np.mean(0.5 * (error**2 / sigma**2 + np.log(2 * np.pi * sigma**2))))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--potential", default="ethanol-gfn2")
    p.add_argument("--train", default="datasets/ethanol-gfn2_train.h5")
    p.add_argument("--calibration", default="datasets/ethanol-gfn2_val.h5")
    p.add_argument("--molecule", default="CH3CH2OH")
    p.add_argument("--reference", default="GFN2-xTB")
    p.add_argument("--test", nargs="*", default=["datasets/ethanol-gfn2_indep.h5"])
    p.add_argument("--plot", default=None, help="PNG of error and uncertainty along the scans")
    p.add_argument("--scans-out", default=None, help="write the labelled scans to this .h5")
    p.add_argument("--llpr-threshold", type=float, default=None,
                   help="a potential already calibrated (tfn-md learn): keep its energy "
                   "uncertainty as it is and flag above this threshold (eV), e.g. the one "
                   "tfn-md learn used")
    args = p.parse_args()

    model = load_potential(args.potential).double()
    species, cutoff = model.species, model.cutoff
    data = {name: GraphDataset(path, cutoff) for name, path in
            (("train", args.train), ("calibration", args.calibration))}
    stored = args.llpr_threshold is not None
    if stored and not model.config.llpr:
        raise SystemExit("--llpr-threshold: the potential has no calibrated energy uncertainty")
    calibration = ("as stored" if stored else
                   calibrate_llpr(model, data["train"], data["calibration"]))
    stats = {name: readout_statistics(model, d) for name, d in data.items()}
    cnt = {name: counts(d, species) for name, d in data.items()}
    approaches = methods(model, stats["train"], cnt["train"])

    # scans from the reference's minimum, labelled by the reference
    make = reference_factory(args.reference, "", {})
    atoms, _ = molecule_or_file(args.molecule, None)
    minimum = relaxed(atoms, make(args.reference))
    edges = bonds(minimum)
    scans = {**stretch_scans(minimum, edges), **contact_scans(minimum, edges)}
    frames, where = [], []
    for name, (x, geometries) in scans.items():
        for f, g in zip(x, geometries, strict=True):
            g = g.copy()
            g.calc = make(args.reference)
            g.get_potential_energy()
            g.get_forces()
            frames.append(g)
            where.append((name, f))
    path = args.scans_out or "/tmp/uncertainty_scans.h5"
    write_atoms(path, frames, append=False)
    data["scans"] = GraphDataset(path, cutoff)
    stats["scans"] = readout_statistics(model, data["scans"])
    cnt["scans"] = counts(data["scans"], species)

    e_cal = np.abs(stats["calibration"]["energy_error"])
    e_scan = np.abs(stats["scans"]["energy_error"])
    bad = e_scan > ERROR
    print(f"LLPR calibration: {calibration}")
    print(f"scans: {len(frames)} geometries, {int(bad.sum())} with |energy error| > "
          f"{1e3 * ERROR:.0f} meV\n")
    print("| approach | Spearman (calibration) | NLL (calibration) | threshold (eV) | "
          "flagged calibration frames | errors > 100 meV flagged (scans) | smallest "
          "sigma/threshold among them |")
    print("|---|---|---|---|---|---|---|")
    chosen = {}
    for name, fn in approaches.items():
        raw_cal = fn(stats["calibration"], cnt["calibration"])
        keep = stored and name == "llpr"
        alpha = 1.0 if keep else fit_alpha(raw_cal, e_cal)
        s_cal = alpha * raw_cal
        s_scan = alpha * fn(stats["scans"], cnt["scans"])
        threshold = args.llpr_threshold if keep else float(np.quantile(s_cal, QUANTILE))
        flagged = s_scan[bad] > threshold
        chosen[name] = (alpha, threshold, s_scan)
        print(f"| {name} | {spearman(s_cal, e_cal):.3f} | {nll(s_cal, e_cal):.2f} | "
              f"{threshold:.4f} | {int((s_cal > threshold).sum())} / {len(s_cal)} | "
              f"{int(flagged.sum())} / {int(bad.sum())} | "
              f"{(s_scan[bad] / threshold).min() if bad.any() else float('nan'):.2f} |")

    print("\nalong the scans (llpr): name, factor, error (eV), sigma (eV)")
    alpha, threshold, s_scan = chosen["llpr"]
    for (name, f), e, s in zip(where, stats["scans"]["energy_error"], s_scan, strict=True):
        mark = "FLAG" if s > threshold else ""
        print(f"  {name:16s} {f:5.2f} {e:+9.4f} {s:8.4f} {mark}")

    for path in args.test:  # reported only: nothing above was chosen with these
        d = GraphDataset(path, cutoff)
        s = readout_statistics(model, d)
        c = counts(d, species)
        temps = np.array([float(d.h5.get_arrays(int(i)).get("md_temperature", np.nan))
                          for i in d.indices])
        e = np.abs(s["energy_error"])
        print(f"\n{path}: {len(e)} frames")
        for name, fn in approaches.items():
            a, thr, _ = chosen[name]
            sig = a * fn(s, c)
            line = f"  {name:14s} Spearman {spearman(sig, e):.3f}"
            for t in np.unique(temps[np.isfinite(temps)]):
                m = temps == t
                line += f"; {t:g} K flagged {int((sig[m] > thr).sum())}/{int(m.sum())}"
            flagged = sig > thr
            if flagged.any() and (~flagged).any():
                line += f"; error ratio flagged/rest {e[flagged].mean() / e[~flagged].mean():.2f}"
            print(line)

    if args.plot:
        plot(where, stats["scans"]["energy_error"], s_scan, threshold, args.plot)


def plot(where, errors, sigma, threshold, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(n for n, _ in where))
    cols = 3
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        m = np.array([n == name for n, _ in where])
        x = np.array([f for n, f in where if n == name])
        ax.plot(x, np.abs(errors[m]), "C3-", label="|energy error|")
        ax.plot(x, sigma[m], "C0--", label="uncertainty (LLPR)")
        ax.axhline(threshold, color="C0", lw=0.8, ls=":", label="flag threshold")
        ax.axhline(ERROR, color="C3", lw=0.8, ls=":", label="100 meV")
        ax.set_yscale("log")
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("distance / minimum's")
        ax.set_ylabel("eV")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
