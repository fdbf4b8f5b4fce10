"""The energy uncertainty from the last layer's prediction rigidity (issue 22): its
calibration, its symmetry, that it grows where a structure leaves the training data, and
that every route of the calculator (eager, compiled, ensemble, checkpoint) returns it."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT

from tfn_md import TFNCalculator, keys, load_potential, save_potential
from tfn_md.data.loader import GraphDataset
from tfn_md.data.writer import write_atoms
from tfn_md.train.uncertainty import calibrate_llpr, readout_statistics
from tests.helpers import make_model, random_rotation_np


def _frames(n, seed, rattle=0.04):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(rattle, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.get_potential_energy()
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A small random model (2 heads: K > 1 is not needed, see below) calibrated on EMT
    ethanol: 40 training frames, 20 calibration frames of their own."""
    folder = tmp_path_factory.mktemp("llpr")
    write_atoms(folder / "train.h5", _frames(40, 0), append=False)
    write_atoms(folder / "calib.h5", _frames(20, 1), append=False)
    model = make_model(energy_heads=1)
    result = calibrate_llpr(model, GraphDataset(folder / "train.h5", 4.0),
                            GraphDataset(folder / "calib.h5", 4.0))
    return model, result, folder


def test_calibration_is_the_stated_formula(calibrated):
    model, result, folder = calibrated
    assert model.config.llpr and result["calibration_structures"] == 20
    train = readout_statistics(model, GraphDataset(folder / "train.h5", 4.0))
    calib = readout_statistics(model, GraphDataset(folder / "calib.h5", 4.0))
    rows = train["pooled"] / train["n_atoms"][:, None]
    precision = rows.T @ rows + result["varsigma2"] * np.eye(rows.shape[1])
    f = calib["pooled"]
    expected = np.sqrt(result["alpha2"] * np.einsum("bc,cd,bd->b", f, np.linalg.inv(precision), f))
    got = model.energy_uncertainty(torch.as_tensor(f)).numpy()
    assert np.allclose(got, expected, rtol=1e-8)
    # alpha fitted: sigma is of the size of the calibration errors (mean of e^2/sigma^2 = 1)
    assert np.mean(calib["energy_error"] ** 2 / got**2) == pytest.approx(1.0, rel=1e-6)


def test_uncertainty_is_invariant(calibrated):
    model, _, _ = calibrated
    calc = TFNCalculator(model, compile=False)
    atoms = _frames(1, 5)[0]
    sigma = calc.get_property(keys.ENERGY_SPREAD, atoms)
    assert sigma > 0
    moved = atoms.copy()
    rng = np.random.default_rng(3)
    moved.positions = moved.positions @ random_rotation_np(rng).T + rng.normal(size=3)
    order = rng.permutation(len(atoms))
    moved = moved[order]
    assert calc.get_property(keys.ENERGY_SPREAD, moved) == pytest.approx(sigma, rel=1e-9)


def test_uncertainty_grows_outside_the_training_data():
    """The shipped ethanol-gfn2 calibrated on its own training and validation frames: a C-O
    bond stretched to 1.6x, two hydrogens pushed to 0.6 of their distance: each far more
    uncertain than any calibration structure."""
    from pathlib import Path

    data = Path(__file__).parents[2] / "datasets"
    model = load_potential("ethanol-gfn2").double()
    train = GraphDataset(data / "ethanol-gfn2_train.h5", model.cutoff)
    calibrate_llpr(model, torch.utils.data.Subset(train, range(0, len(train), 4)),
                   GraphDataset(data / "ethanol-gfn2_val.h5", model.cutoff))
    calib = readout_statistics(model, GraphDataset(data / "ethanol-gfn2_val.h5", model.cutoff))
    largest = float(model.energy_uncertainty(torch.as_tensor(calib["pooled"])).max())
    calc = TFNCalculator(model, compile=False)
    atoms = molecule("CH3CH2OH")
    symbols = atoms.get_chemical_symbols()
    c, o = 1, symbols.index("O")  # ase's ethanol: atom 1 is the carbon bonded to O
    assert atoms.get_distance(c, o) < 1.5
    stretched = atoms.copy()
    stretched.set_distance(c, o, 1.6 * atoms.get_distance(c, o), fix=0)
    pushed = atoms.copy()
    h = [k for k, s in enumerate(symbols) if s == "H"]
    pair = min(((a, b) for a in h for b in h if a < b), key=lambda p: atoms.get_distance(*p))
    pushed.set_distance(*pair, 0.6 * atoms.get_distance(*pair), fix=0.5)
    assert calc.get_property(keys.ENERGY_SPREAD, atoms) < largest
    for far in (stretched, pushed):
        assert calc.get_property(keys.ENERGY_SPREAD, far) > 2 * largest


def test_every_route_returns_it(calibrated, tmp_path, compiler, monkeypatch):
    monkeypatch.setenv("TFN_MD_CACHE", str(tmp_path / "cache"))
    model, _, _ = calibrated
    save_potential(model, tmp_path / "m.pt")
    loaded = load_potential(tmp_path / "m.pt")
    assert loaded.config.llpr
    assert torch.equal(loaded.readout_covariance, model.readout_covariance)
    atoms = _frames(1, 7)[0]
    eager = TFNCalculator(loaded, compile=False)
    fast = TFNCalculator(loaded, compile=True)
    expected = eager.get_property(keys.ENERGY_SPREAD, atoms)
    assert fast.get_property(keys.ENERGY_SPREAD, atoms) == pytest.approx(expected, rel=1e-9)
    assert fast.engine.compiled.n_programs == 1
    with pytest.raises(PropertyNotImplementedError, match="forces_spread needs"):
        eager.get_property(keys.FORCES_SPREAD, atoms)  # one head: no force spread
    heads = make_model(energy_heads=3)
    heads.load_state_dict({k: v for k, v in loaded.state_dict().items()
                           if k not in ("energy_readout.weight", "readout_covariance")},
                          strict=False)
    heads.set_readout_covariance(loaded.readout_covariance)
    ensemble = TFNCalculator(heads, compile=False)
    # with forces_spread (the ensemble route) and without: the same energy uncertainty
    a = ensemble.get_property(keys.ENERGY_SPREAD, atoms)
    ensemble.get_property(keys.FORCES_SPREAD, atoms)
    assert ensemble.results[keys.ENERGY_SPREAD] == pytest.approx(a, rel=1e-9)


def test_model_without_uncertainty_says_so():
    calc = TFNCalculator(make_model(), compile=False)
    with pytest.raises(PropertyNotImplementedError, match="calibrated energy uncertainty"):
        calc.get_property(keys.ENERGY_SPREAD, molecule("CH3CH2OH"))


def test_calibration_summary_of_the_energy_uncertainty():
    from tfn_md.train.uncertainty import calibration_summary

    sigma = np.array([0.001, 0.002, 0.003, 0.010, 0.020])
    frames = {"spread_rms": sigma, "error_rms": sigma, "energy_spread": sigma,
              "energy_error": np.array([0.0005, 0.001, np.nan, 0.01, 0.03])}
    energy = calibration_summary(frames, energy_threshold=0.005)["energy"]
    assert energy["n_frames"] == 4  # the frame without an energy label is left out
    assert energy["spearman"] == pytest.approx(1.0)
    assert energy["flagged"] == 2
    assert energy["error_ratio"] == pytest.approx(0.02 / 0.00075)
