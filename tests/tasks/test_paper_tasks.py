"""The paper's tasks in quick mode: each trains a little and improves, and its outputs
transform as they must (invariant logits, vector accelerations, rank-2 inertia tensors)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from tests.helpers import random_rotation_np
from tfn_md import keys
from tfn_md.tasks import get_task
from tfn_md.tasks.common import batch_graph, load_task

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


def _rotate(atoms: Atoms, rot, shift) -> Atoms:
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T + shift
    return moved


def test_tetris_quick(tmp_path):
    task = get_task("tetris")
    report = task.run(tmp_path, quick=True)
    assert report["train_accuracy"] == 1.0 and report["test_accuracy"] == 1.0
    assert report["untrained"]["train_accuracy"] < 1.0
    # logits of rotated + translated copies equal those of the training orientation
    assert report["max_logit_change_under_rotation"] < 1e-9
    for name in ("report.json", "report.md", "loss.png", "tetris.pt"):
        assert (tmp_path / name).exists()
    # --evaluate reproduces the numbers
    again = task.run(tmp_path / "eval", data=tmp_path / "tetris.h5", evaluate=tmp_path / "tetris.pt")
    assert again["test_accuracy"] == report["test_accuracy"]
    assert again["mirror_chiral_1_as"] == report["mirror_chiral_1_as"]


@pytest.mark.parametrize("name", ["gravity", "inertia"])
def test_physics_tasks_quick(tmp_path, name):
    task = get_task(name)
    report = task.run(tmp_path, quick=True)
    assert report["median_relative_error"] < 0.5 * report["untrained"]["median_relative_error"]
    assert (tmp_path / "radial.png").exists()
    model, _, _ = load_task(tmp_path / f"{name}.pt", name)
    again = task.run(tmp_path / "eval", data=tmp_path / f"{name}.h5", evaluate=tmp_path / f"{name}.pt")
    assert again["median_relative_error"] == report["median_relative_error"]
    # equivariance of the outputs: vectors rotate as R a, tensors as R I R^T
    rng = np.random.default_rng(1)
    atoms = task.make_set(rng, 7) if name == "gravity" else task.make_set(rng)
    rot, shift = random_rotation_np(rng), rng.normal(size=3)
    key = keys.VECTORS if name == "gravity" else keys.TENSORS
    with torch.no_grad():
        out = model(batch_graph([atoms], "point_mass"))[key].numpy()
        out_rot = model(batch_graph([_rotate(atoms, rot, shift)], "point_mass"))[key].numpy()
    if name == "gravity":
        expected = out @ rot.T
    else:
        expected = np.einsum("ij,njk,lk->nil", rot, out, rot)
    assert np.abs(out_rot - expected).max() < 1e-10 * np.abs(out).max()


def test_missing_point_quick(tmp_path):
    task = get_task("missing-point")
    data = DATASETS / "qm9-missing-point-mini.h5"
    report = task.run(tmp_path, data=data, quick=True)
    train_before = report["untrained"]["5-18"]["distance_mae"]
    assert report["splits"]["5-18"]["distance_mae"] < train_before
    assert report["splits"]["5-18"]["predictions"] == sum(
        len(a) for a in task.qm9_splits(data, tmp_path, True, train_set="shuffled")["5-18"]
    )
    assert report["splits"]["19"]["predictions"] == 8 * 19
    assert report["train_set"] == "shuffled"
    again = task.run(tmp_path / "eval", data=data, evaluate=tmp_path / "missing_point.pt",
                     atoms="19", limit=8)
    assert set(again["splits"]) == {"19"}
    assert again["splits"]["19"] == report["splits"]["19"]


def test_missing_point_training_sets():
    """The training split is the first molecules with 5-18 atoms in QM9 index order or in the
    hashed order; the test splits are always in index order; a file holding the chosen
    molecules (and others) selects the same ones again."""
    from tfn_md.tasks.missing_point import SPLITS, order_key, select

    rng = np.random.default_rng(0)
    sizes = {i: int(n) for i, n in zip(range(1, 3001), rng.integers(5, 30, 3000))}
    for train_set in ("index", "shuffled"):
        chosen = select(sizes, SPLITS, 20, train_set)
        for name, (lo, hi) in SPLITS.items():
            assert len(chosen[name]) == 20 and all(lo <= sizes[i] <= hi for i in chosen[name])
        for name in ("19", "23", "25-29"):  # test splits: the smallest indices of their size
            lo, hi = SPLITS[name]
            assert chosen[name] == sorted(i for i, n in sizes.items() if lo <= n <= hi)[:20]
        subset = {i: sizes[i] for v in chosen.values() for i in v}
        subset.update({i: sizes[i] for i in list(sizes)[::7]})
        assert select(subset, SPLITS, 20, train_set) == chosen
    index, shuffled = (select(sizes, SPLITS, 20, t)["5-18"] for t in ("index", "shuffled"))
    assert index == sorted(i for i, n in sizes.items() if n <= 18)[:20]
    assert shuffled != index and max(shuffled) > 5 * max(index)
    assert order_key(12, "shuffled") == order_key(12, "shuffled") != order_key(13, "shuffled")
    with pytest.raises(ValueError, match="train set order"):
        order_key(1, "random")
