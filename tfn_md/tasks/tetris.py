"""Task 1, 3D Tetris: classify 8 shapes of 4 points, trained in one orientation only.

Readout: mean over points of the l = 0 features -> linear -> 8 logits (the paper's).
Because every layer is equivariant, the logits are invariant under rotations and
translations, so accuracy on rotated copies equals accuracy in the training
orientation up to float rounding. Mirror images: the CG path 1 ⊗ 1 -> 1 is the cross
product, a pseudo-vector, so the network is SO(3)- but not O(3)-equivariant and can
tell the two chiral shapes apart; the report says what it predicts for mirror images.
"""

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from torch import nn

from ..model import TFN
from ..so3 import random_rotation
from .common import (
    DUMMY,
    Timer,
    batch_graph,
    load_task,
    loss_plot,
    save_task,
    seeded,
    train_loop,
    write_report,
)

SHAPES = {
    "chiral_1": [(0, 0, 0), (0, 0, 1), (1, 0, 0), (1, 1, 0)],
    "chiral_2": [(0, 0, 0), (0, 0, 1), (1, 0, 0), (1, -1, 0)],
    "square": [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)],
    "line": [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3)],
    "corner": [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)],
    "L": [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0)],
    "T": [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 1)],
    "zigzag": [(0, 0, 0), (1, 0, 0), (1, 1, 0), (2, 1, 0)],
}
NAMES = list(SHAPES)
MODEL = dict(channels=8, l_max=2, layers=3, cutoff=None, basis="gaussian", n_basis=12,
             gaussian_range=[0.0, 3.5], radial_hidden=16)


def shape_atoms(name: str, positions=None) -> Atoms:
    pos = np.array(SHAPES[name], float) if positions is None else positions
    atoms = Atoms(DUMMY * 4, positions=pos)
    atoms.info["label"] = NAMES.index(name)
    return atoms


def make_data(n_rotations: int, seed: int) -> dict[str, list[Atoms]]:
    """train: the 8 shapes as given; test: each shape under n random rotations + translations;
    mirror: the same rotated copies reflected through a plane."""
    rng = np.random.default_rng(seed)
    rotations = random_rotation(len(NAMES) * n_rotations, seed=seed).numpy()
    train = [shape_atoms(n) for n in NAMES]
    test, mirror = [], []
    for k, name in enumerate(NAMES):
        base = np.array(SHAPES[name], float)
        for r in range(n_rotations):
            pos = base @ rotations[k * n_rotations + r].T + rng.uniform(-5, 5, size=3)
            test.append(shape_atoms(name, pos))
            mirror.append(shape_atoms(name, pos * np.array([-1.0, 1.0, 1.0])))
    return {"train": train, "test": test, "mirror": mirror}


class TetrisHead(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.linear = nn.Linear(channels, len(NAMES))

    def forward(self, model: TFN, graph) -> torch.Tensor:
        x = model.features(graph)[0]  # [n, c, D]
        pooled = torch.zeros(graph.n_graphs, x.shape[1], dtype=x.dtype).index_add_(
            0, graph.batch, x[..., 0]
        ) / torch.bincount(graph.batch, minlength=graph.n_graphs)[:, None]
        return self.linear(pooled)  # [n_graphs, 8]


def predict(model, head, structures, batch=256) -> np.ndarray:
    logits = []
    with torch.no_grad():
        for k in range(0, len(structures), batch):
            g = batch_graph(structures[k : k + batch], None, model.e0.dtype)
            logits.append(head(model, g).numpy())
    return np.concatenate(logits)


def run(out: Path, data: Path | None = None, evaluate: Path | None = None, quick=False, seed=0):
    out = Path(out)
    n_rot = 20 if quick else 1000
    splits = load_or_make_data_cached(data, out, n_rot, seed)
    timer = Timer()
    untrained = None
    if evaluate is None:
        with seeded(seed):
            model = TFN(species=[DUMMY], **MODEL).double()
            head = TetrisHead(MODEL["channels"]).double()
        untrained = score(model, head, splits)
        g = batch_graph(splits["train"], None, torch.float64)
        labels = torch.tensor([a.info["label"] for a in splits["train"]])
        params = list(model.parameters()) + list(head.parameters())
        steps = 60 if quick else 400
        history = train_loop(
            params, lambda s: nn.functional.cross_entropy(head(model, g), labels), steps, lr=1e-2
        )
    else:
        model, head_state, _ = load_task(evaluate, "tetris")
        head = TetrisHead(model.config.channels).to(model.e0.dtype)
        head.load_state_dict(head_state)
        history = []
    report = score(model, head, splits)
    report["untrained"] = untrained
    report.update(train_seconds=timer.seconds if evaluate is None else None, history=history)
    if evaluate is None:
        save_task(out / "tetris.pt", "tetris", model, head, report)
    rows = [
        "| set | examples | accuracy % (ours) | accuracy % (paper) |",
        "|---|---|---|---|",
        f"| training orientation | 8 | {100 * report['train_accuracy']:.1f} | 100 |",
        f"| random rotations + translations | {report['n_test']} | "
        f"{100 * report['test_accuracy']:.1f} | 100 |",
        f"| mirror images (label = original shape) | {report['n_test']} | "
        f"{100 * report['mirror_accuracy']:.1f} | - |",
    ]
    table = "\n".join(rows) + (
        f"\n\nMirror images of chiral_1 are classified as: {report['mirror_chiral_1_as']}; "
        f"of chiral_2 as: {report['mirror_chiral_2_as']}. Largest change of any logit "
        f"under rotation: {report['max_logit_change_under_rotation']:.2e}."
    )
    write_report(out, "tetris", report, table, loss_plot(history))
    return report


def score(model, head, splits) -> dict:
    def acc(name):
        logits = predict(model, head, splits[name])
        labels = np.array([a.info["label"] for a in splits[name]])
        return logits, labels, float((logits.argmax(1) == labels).mean())

    train_logits, _, train_acc = acc("train")
    test_logits, test_labels, test_acc = acc("test")
    mirror_logits, mirror_labels, mirror_acc = acc("mirror")
    # logits of each rotated copy against those of the training orientation
    change = np.abs(test_logits - train_logits[test_labels]).max()

    def mirrored_as(k):
        pred = mirror_logits[mirror_labels == k].argmax(1)
        names, counts = np.unique(pred, return_counts=True)
        return {NAMES[n]: int(c) for n, c in zip(names, counts)}

    return {
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "n_test": len(test_labels),
        "mirror_accuracy": mirror_acc,
        "mirror_chiral_1_as": mirrored_as(0),
        "mirror_chiral_2_as": mirrored_as(1),
        "max_logit_change_under_rotation": float(change),
    }


def load_or_make_data_cached(data, out, n_rot, seed):
    from .common import load_or_make_data

    return load_or_make_data(data, out, "tetris", lambda: make_data(n_rot, seed))
