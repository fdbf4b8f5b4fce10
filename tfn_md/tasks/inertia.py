"""Task 3, moment of inertia: point masses (scalars in) -> inertia tensor (l = 0 + l = 2 out).

At every point a the target is the inertia tensor of all masses about a,

    I_a = sum_b m_b (|r_ab|^2 1 - r_ab r_ab^T),     r_ab = x_b - x_a,

whose trace part (2/3 sum_b m_b r_ab^2, l = 0) and symmetric traceless part
(-sum_b m_b (r_ab r_ab^T - r_ab^2/3), l = 2) are one TFN layer with radial functions
2/3 r^2 and -r^2 exactly (the paper's). Data: 15 points uniform in [-0.5, 0.5]^3,
masses uniform in [0.5, 2]. Metric: relative Frobenius error |I_pred - I|_F / |I|_F.
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

N_POINTS = 15
MODEL = dict(
    channels=8,
    l_max=2,
    layers=1,
    cutoff=None,
    basis="gaussian",
    n_basis=16,
    gaussian_range=[0.0, 1.8],
    radial_hidden=32,
    n_scalar_inputs=1,
    last_nonlinearity=False,
    residual=False,
    readout_l_max=2,
)


def inertia_tensors(pos: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """[n, 3, 3]: the inertia tensor about each point."""
    d = pos[None, :, :] - pos[:, None, :]  # [a, b, 3]
    r2 = (d**2).sum(-1)
    eye = np.eye(3)
    return np.einsum(
        "b,abij->aij", masses, r2[..., None, None] * eye - d[..., :, None] * d[..., None, :]
    )


def make_set(rng) -> Atoms:
    pos = rng.uniform(-0.5, 0.5, size=(N_POINTS, 3))
    masses = rng.uniform(0.5, 2.0, size=N_POINTS)
    atoms = Atoms(DUMMY * N_POINTS, positions=pos)
    atoms.arrays["point_mass"] = masses
    atoms.arrays["inertia"] = inertia_tensors(pos, masses).reshape(N_POINTS, 9)
    return atoms


def make_data(n_train: int, n_test: int, seed: int) -> dict[str, list[Atoms]]:
    rng = np.random.default_rng(seed)
    return {
        "train": [make_set(rng) for _ in range(n_train)],
        "test": [make_set(rng) for _ in range(n_test)],
    }


def predict(model, structures) -> np.ndarray:
    return predict_points(model, structures, keys.TENSORS)


def learned_radial(model, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(l = 0, l = 2) effective radial functions: a unit mass at distance r along z changes
    the tensor at the origin by f0(r) 1 + f2(r) (z z^T - 1/3)."""
    pred = predict(model, mass_pair_probes(r)).reshape(len(r), 2, 2, 3, 3)
    delta = pred[:, 0, 0] - pred[:, 1, 0]  # tensor at the origin: with minus without
    f0 = np.trace(delta, axis1=1, axis2=2) / 3
    zz = np.diag([-1 / 3, -1 / 3, 2 / 3])
    f2 = np.einsum("nij,ij->n", delta, zz) / (zz**2).sum()
    return f0, f2


def run(out: Path, data: Path | None = None, evaluate: Path | None = None, quick=False, seed=0):
    out = Path(out)
    n_train, n_test = (200, 100) if quick else (2000, 1000)
    splits = load_or_make_data(data, out, "inertia", lambda: make_data(n_train, n_test, seed))
    model, report = run_point_task(
        "inertia",
        out,
        splits,
        evaluate,
        seed,
        MODEL,
        "inertia",
        keys.TENSORS,
        300 if quick else 3000,
        score,
    )
    r = np.linspace(0.0, 1.7, 100)
    f0, f2 = learned_radial(model, r)
    table = "\n".join(
        [
            f"| metric ({report['n_sets']} held-out sets of {N_POINTS} points) | ours | paper |",
            "|---|---|---|",
            f"| median relative Frobenius error | {100 * report['median_relative_error']:.3f} % | "
            "(qualitative: radial functions -> 2/3 r^2, -r^2) |",
            f"| mean relative Frobenius error | {100 * report['mean_relative_error']:.3f} % | - |",
            f"| worst relative Frobenius error | {100 * report['max_relative_error']:.3f} % | - |",
        ]
    )

    def plot_radial(ax):
        ax.plot(r, f0, label="learned l=0")
        ax.plot(r, 2 / 3 * r**2, "--", label="exact 2/3 r^2")
        ax.plot(r, f2, label="learned l=2")
        ax.plot(r, -(r**2), "--", label="exact -r^2")
        ax.set_xlabel("r")
        ax.legend()

    plots = {"radial.png": plot_radial, **loss_plot(report["history"])}
    write_report(out, "inertia", report, table, plots)
    return report


def score(model, test) -> dict:
    pred = predict(model, test)
    true = np.concatenate([a.arrays["inertia"] for a in test]).reshape(-1, 3, 3)
    rel = np.linalg.norm(pred - true, axis=(1, 2)) / np.linalg.norm(true, axis=(1, 2))
    return {
        "n_sets": len(test),
        "median_relative_error": float(np.median(rel)),
        "mean_relative_error": float(rel.mean()),
        "max_relative_error": float(rel.max()),
    }
