"""Task 2, gravity: point masses (scalars in) -> Newtonian accelerations (vectors out).

    a_i = sum_{j != i} m_j (x_j - x_i) / |x_j - x_i|^3      (G = 1)

Data as in the paper's code: coordinates uniform in [-2, 2]^3, points closer than
0.5 rejected, masses uniform in [0.5, 2]; training sets of 2-10 points, held-out
sets of 2-50 points. One TFN layer with its 0 -> 1 path and a linear readout can
represent a_i exactly if its effective radial function is 1/r^2 (the paper's
-1/r^2 with r = x_i - x_j); the report plots the learned one.
"""

from pathlib import Path

import numpy as np
from ase import Atoms

from .. import keys
from .common import (
    DUMMY,
    load_or_make_data,
    loss_plot,
    mass_pair_probes,
    predict_points,
    run_point_task,
    write_report,
)

MODEL = dict(
    channels=8,
    l_max=1,
    layers=1,
    cutoff=None,
    basis="gaussian",
    n_basis=40,
    gaussian_range=[0.0, 7.0],
    radial_hidden=64,
    n_scalar_inputs=1,
    last_nonlinearity=False,
    residual=False,
)


def sample_points(rng, n: int, box=2.0, min_dist=0.5) -> np.ndarray:
    points = []
    while len(points) < n:
        p = rng.uniform(-box, box, size=3)
        if all(np.linalg.norm(p - q) >= min_dist for q in points):
            points.append(p)
    return np.array(points)


def accelerations(pos: np.ndarray, masses: np.ndarray) -> np.ndarray:
    d = pos[None, :, :] - pos[:, None, :]  # [n, n, 3]: x_j - x_i
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, np.inf)
    return (masses[None, :, None] * d / r[..., None] ** 3).sum(1)


def make_set(rng, n) -> Atoms:
    pos = sample_points(rng, n)
    masses = rng.uniform(0.5, 2.0, size=n)
    atoms = Atoms(DUMMY * n, positions=pos)
    atoms.arrays["point_mass"] = masses
    atoms.arrays["acceleration"] = accelerations(pos, masses)
    return atoms


def make_data(n_train: int, n_test: int, seed: int) -> dict[str, list[Atoms]]:
    rng = np.random.default_rng(seed)
    return {
        "train": [make_set(rng, rng.integers(2, 11)) for _ in range(n_train)],
        "test": [make_set(rng, rng.integers(2, 51)) for _ in range(n_test)],
    }


def predict(model, structures) -> np.ndarray:
    return predict_points(model, structures, keys.VECTORS)


def learned_radial(model, r: np.ndarray) -> np.ndarray:
    """Effective radial function: acceleration of a test point along the direction to a
    unit mass at distance r, minus the same without the mass (isolates the pair term)."""
    pred = predict(model, mass_pair_probes(r)).reshape(len(r), 2, 2, 3)
    return (pred[:, 0, 0] - pred[:, 1, 0])[:, 2]  # at the origin: with minus without, along z


def run(out: Path, data: Path | None = None, evaluate: Path | None = None, quick=False, seed=0):
    out = Path(out)
    n_train, n_test = (200, 100) if quick else (5000, 1000)
    splits = load_or_make_data(data, out, "gravity", lambda: make_data(n_train, n_test, seed))
    model, report = run_point_task(
        "gravity",
        out,
        splits,
        evaluate,
        seed,
        MODEL,
        "acceleration",
        keys.VECTORS,
        300 if quick else 6000,
        score,
    )
    r = np.linspace(0.5, 6.5, 200)
    f = learned_radial(model, r)
    table = "\n".join(
        [
            "| metric (1000 held-out sets of 2-50 points) | ours | paper |",
            "|---|---|---|",
            f"| median relative error of the acceleration | {100 * report['median_relative_error']:.3f} % | "
            "(qualitative: learned radial -> 1/r^2) |",
            f"| mean relative error | {100 * report['mean_relative_error']:.3f} % | - |",
            f"| 90th percentile relative error | {100 * report['p90_relative_error']:.3f} % | - |",
        ]
    )

    def plot_radial(ax):
        ax.plot(r, f, label="learned (a · r_hat for a unit mass)")
        ax.plot(r, 1 / r**2, "--", label="exact 1/r^2")
        ax.set_xlabel("r")
        ax.set_yscale("log")
        ax.legend()

    plots = {"radial.png": plot_radial, **loss_plot(report["history"])}
    write_report(out, "gravity", report, table, plots)
    return report


def score(model, test) -> dict:
    pred = predict(model, test)
    true = np.concatenate([a.arrays["acceleration"] for a in test])
    rel = np.linalg.norm(pred - true, axis=1) / np.linalg.norm(true, axis=1)
    return {
        "n_sets": len(test),
        "n_points": len(true),
        "median_relative_error": float(np.median(rel)),
        "mean_relative_error": float(rel.mean()),
        "p90_relative_error": float(np.quantile(rel, 0.9)),
    }
