"""Training and evaluating a dipole head: ``[loss] vectors = { dipole = w }`` fits the
dipole sum_i q_i r_i + v_i, ``charges = w`` the atomic charges (GFN2-xTB's labels)."""

import numpy as np
import pytest

from tfn_md import load_potential
from tfn_md.cli import main
from tfn_md.data import write_atoms
from tfn_md.train import Trainer, TrainConfig


@pytest.fixture(scope="module")
def xtb_data(tmp_path_factory):
    pytest.importorskip("tblite")
    from ase.build import molecule

    from tfn_md.learn.reference import label, reference_factory

    make = reference_factory("GFN2-xTB")
    frames = []
    for k in range(24):
        atoms = molecule("CH3CH2OH" if k % 2 else "H2O")
        atoms.rattle(0.08, seed=k)
        frames.append(label(atoms, make, "GFN2-xTB"))
    path = tmp_path_factory.mktemp("dipole") / "xtb.h5"
    write_atoms(path, frames)
    return path


def config(data, out, **loss):
    return TrainConfig.from_dict({
        "data": {"train": str(data), "batch_size": 4, "valid_fraction": 0.25},
        "model": {"channels": 8, "l_max": 1, "layers": 2, "cutoff": 4.0, "radial_hidden": 16,
                  "dipole": True},
        "loss": {"energy": 1.0, "forces": 1.0, **loss},
        "optim": {"epochs": 6, "lr": 1e-2, "ema_decay": 0.5},
        "run": {"out": str(out), "seed": 1, "dtype": "float64", "plots": False},
    })


def test_dipole_and_charges_train_and_evaluate(xtb_data, tmp_path, capsys):
    cfg = config(xtb_data, tmp_path / "run", vectors={"dipole": 100.0}, charges=100.0)
    trainer = Trainer(cfg, progress=False)
    first = trainer.validate()
    trainer.fit()
    after = trainer.validate()
    assert after["dipole_mae"] < 0.7 * first["dipole_mae"]
    assert after["charges_mae"] < 0.7 * first["charges_mae"]
    model = load_potential(tmp_path / "run" / "best.pt")
    assert model.config.dipole
    assert main(["eval", str(tmp_path / "run" / "best.pt"), str(xtb_data)]) == 0
    out = capsys.readouterr().out
    assert "| dipole |" in out and "| charges |" in out and "| dipole (Debye) |" in out


def test_charges_need_a_dipole_head(xtb_data, tmp_path):
    raw = config(xtb_data, tmp_path).to_dict()
    raw["model"]["dipole"] = False
    raw["loss"]["charges"] = 1.0
    with pytest.raises(ValueError, match="needs model.dipole = true"):
        TrainConfig.from_dict(raw)


def test_without_a_dipole_head_the_vector_sum_is_fitted_as_before(xtb_data, tmp_path):
    """The paper tasks' l = 1 readout: a model without a dipole head fits the sum of its
    per-atom vectors to a per-structure vector label, as before."""
    raw = config(xtb_data, tmp_path / "v", vectors={"dipole": 10.0}).to_dict()
    raw["model"]["dipole"] = False
    trainer = Trainer(TrainConfig.from_dict(raw), progress=False)
    metrics = trainer.validate()
    assert np.isfinite(metrics["dipole_mae"]) and "charges_mae" not in metrics
