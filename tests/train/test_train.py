"""The trainer: loss falls, resume is exact, two processes give one process's gradients."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import emt_dataset, small_config
from tfn_md import TFNCalculator, load_potential
from tfn_md.train import Trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return emt_dataset(tmp_path_factory.mktemp("data") / "emt.h5")


def test_loss_falls_and_outputs(dataset, tmp_path):
    trainer = Trainer(small_config(dataset, tmp_path, epochs=8), progress=False)
    first = trainer.validate()["loss"]
    trainer.fit()
    history = trainer.history
    assert history[-1]["valid_loss"] < 0.2 * first
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for name in ("best.pt", "last.pt", "metrics.csv"):
        assert (tmp_path / name).exists()
    # the best checkpoint is a plain potential for the calculator
    model = load_potential(tmp_path / "best.pt")
    atoms = trainer.train_set.h5[0]
    atoms.calc = TFNCalculator(model)
    assert np.isfinite(atoms.get_forces()).all()
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(history) and "valid_forces_mae" in csv_lines[0]


def test_resume_reproduces_uninterrupted_run(dataset, tmp_path):
    straight = Trainer(small_config(dataset, tmp_path / "a", epochs=4), progress=False)
    straight.fit()
    first = Trainer(small_config(dataset, tmp_path / "b", epochs=2), progress=False)
    first.fit()
    del first  # "killed" after epoch 2: only what is on disk survives
    resumed = Trainer(small_config(dataset, tmp_path / "b", epochs=4), resume=True,
                      progress=False)
    assert resumed.epoch == 2
    resumed.fit()
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
    for p, q in zip(straight.ema.parameters(), resumed.ema.parameters()):
        assert torch.equal(p, q)


def test_torchrun_two_processes_match_one(dataset, tmp_path):
    grads_path = tmp_path / "ddp_grads.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29531", str(ROOT / "tests" / "train" / "ddp_worker.py"),
           str(dataset), str(tmp_path / "ddp"), str(grads_path)]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, timeout=300)
    ddp = torch.load(grads_path, weights_only=True)
    single = Trainer(small_config(dataset, tmp_path / "one"), progress=False)
    single.backward(np.arange(7))
    for name, p in single.model.named_parameters():
        assert torch.allclose(ddp[name], p.grad, rtol=1e-10, atol=1e-12), name
    assert any(p.grad.abs().max() > 0 for p in single.model.parameters())
