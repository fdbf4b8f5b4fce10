"""Shallow ensemble (issue 12b): K energy heads on shared features, their spreads in the
calculator, the Gaussian NLL that trains them, and starting heads from a one-head model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from scipy.spatial.transform import Rotation

from tfn_md import TFN, TFNCalculator, keys, load_potential, save_potential
from tfn_md.graph import atoms_to_graph
from tfn_md.inference.response import compute_response
from tfn_md.inference.uncertainty import ensemble_response
from tfn_md.train.uncertainty import energy_nll, init_heads_from, spearman


def _model(heads=4, species=("C", "H", "O"), seed=0):
    torch.manual_seed(seed)
    return TFN(species=list(species), channels=8, l_max=1, layers=2, cutoff=4.0,
               energy_heads=heads).double()


def _ethanol(seed=1):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.1, seed=seed)
    return atoms


def test_heads_mean_is_the_energy_and_head_forces_are_gradients():
    model = _model()
    atoms = _ethanol()
    graph = atoms_to_graph(atoms, model.cutoff, torch.float64, "cpu")
    out = ensemble_response(model, graph)
    heads = out[keys.ENERGY_HEADS][0]
    assert heads.shape == (4,)
    assert torch.allclose(out[keys.ENERGY][0], heads.mean(), rtol=0, atol=1e-12)
    plain = compute_response(model, graph, forces=True, energy_only=True)
    assert torch.allclose(out[keys.FORCES], plain[keys.FORCES], atol=1e-12)
    # each head's forces by central differences of that head's energy
    h = 1e-5
    for head, (atom, axis) in [(0, (0, 0)), (3, (4, 2))]:
        energies = []
        for sign in (1, -1):
            shifted = atoms.copy()
            shifted.positions[atom, axis] += sign * h
            g = atoms_to_graph(shifted, model.cutoff, torch.float64, "cpu")
            energies.append(model(g)[keys.ENERGY_HEADS][0, head].item())
        fd = -(energies[0] - energies[1]) / (2 * h)
        assert out[keys.FORCES_HEADS][head, atom, axis].item() == pytest.approx(fd, abs=1e-7)
    fh = out[keys.FORCES_HEADS].detach()
    expect = (fh - fh.mean(0)).square().sum(-1).mean(0).sqrt()
    assert torch.allclose(out[keys.FORCES_SPREAD], expect)
    assert out[keys.ENERGY_SPREAD][0].item() == pytest.approx(heads.std(unbiased=False).item())
    assert out[keys.FORCES_SPREAD].min() > 0 and out[keys.ENERGY_SPREAD][0] > 0


def test_calculator_spreads_invariant_and_on_request():
    model = _model()
    atoms = _ethanol()
    calc = TFNCalculator(model, compile=False)
    atoms.calc = calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    spread = calc.results[keys.ENERGY_SPREAD]
    assert keys.FORCES_SPREAD not in calc.results  # not computed unless asked for
    fs = calc.get_property(keys.FORCES_SPREAD, atoms)
    assert fs.shape == (len(atoms),) and (fs > 0).all()
    assert calc.results[keys.ENERGY] == pytest.approx(energy, abs=1e-10)
    assert np.allclose(calc.results[keys.FORCES], forces, atol=1e-10)
    assert calc.results[keys.ENERGY_SPREAD] == pytest.approx(spread, abs=1e-12)
    rot = Rotation.random(random_state=3).as_matrix()
    turned = atoms.copy()
    turned.positions = atoms.positions @ rot.T + 1.7
    turned.calc = TFNCalculator(model, compile=False)
    assert turned.calc.get_property(keys.FORCES_SPREAD, turned) == pytest.approx(fs, abs=1e-9)
    assert turned.calc.results[keys.ENERGY_SPREAD] == pytest.approx(spread, abs=1e-9)
    assert np.allclose(turned.get_forces(), forces @ rot.T, atol=1e-9)


def test_spreads_of_a_periodic_system_and_its_stress():
    torch.manual_seed(0)
    model = TFN(species=["Cu"], channels=8, l_max=1, layers=2, cutoff=3.5,
                energy_heads=3).double()
    atoms = bulk("Cu", cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=2)
    calc = TFNCalculator(model, compile=False)
    atoms.calc = calc
    stress = atoms.get_stress()
    fs = calc.get_property(keys.FORCES_SPREAD, atoms)
    assert fs.shape == (len(atoms),)
    assert np.allclose(calc.results[keys.STRESS], stress, atol=1e-10)


def test_single_head_model_has_no_spread():
    atoms = _ethanol()
    atoms.calc = TFNCalculator(_model(heads=1), compile=False)
    atoms.get_potential_energy()
    assert keys.ENERGY_SPREAD not in atoms.calc.results
    with pytest.raises(PropertyNotImplementedError, match="several energy heads"):
        atoms.calc.get_property(keys.FORCES_SPREAD, atoms)


def test_checkpoint_with_heads_roundtrips(tmp_path):
    model = _model(heads=5)
    save_potential(model, tmp_path / "m.pt")
    loaded = load_potential(tmp_path / "m.pt")
    assert loaded.config.energy_heads == 5
    graph = atoms_to_graph(_ethanol(), 4.0, torch.float64, "cpu")
    a, b = model(graph)[keys.ENERGY_HEADS], loaded.double()(graph)[keys.ENERGY_HEADS]
    assert torch.allclose(a, b)


def test_heads_start_at_the_one_head_model():
    one = _model(heads=1, seed=5)
    many = _model(heads=6, seed=6)
    init_heads_from(many, one.state_dict(), torch.Generator().manual_seed(0))
    graph = atoms_to_graph(_ethanol(), 4.0, torch.float64, "cpu")
    e1 = one(graph)[keys.ENERGY]
    out = many(graph)
    assert torch.allclose(out[keys.ENERGY], e1, rtol=0, atol=1e-9)  # mean kept exactly
    assert out[keys.ENERGY_HEADS].std() > 0  # heads differ


def test_nll_moves_only_the_heads_deviations():
    from tfn_md.data.loader import collate_batch

    model = _model(heads=4)
    graphs = [atoms_to_graph(_ethanol(seed=s), 4.0, torch.float64, "cpu") for s in range(3)]
    from tfn_md.data.loader import Targets

    items = [(g, Targets({keys.ENERGY: torch.tensor([-1.0 * s], dtype=torch.float64)}))
             for s, g in enumerate(graphs)]
    graph, targets = collate_batch(items)
    out = compute_response(model, graph, forces=True, training=True, energy_only=True)
    loss = energy_nll(model, out, targets, graph)
    model.zero_grad()
    loss.backward()
    g = model.energy_readout.weight.grad  # [K, c]
    assert g.abs().max() > 0
    assert torch.allclose(g.sum(0), torch.zeros_like(g[0]), atol=1e-8 * g.abs().max())
    for name, p in model.named_parameters():  # features detached: no other gradient
        if name != "energy_readout.weight":
            assert p.grad is None or p.grad.abs().max() == 0, name


def test_nll_needs_heads(tmp_path):
    from tfn_md.train.config import TrainConfig

    with pytest.raises(ValueError, match="energy_nll = 1.0 needs model.energy_heads >= 2"):
        TrainConfig.from_dict({"data": {"train": "x.h5"}, "loss": {"energy_nll": 1.0}})


def test_spearman():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)


def test_calibrate_heads_keeps_the_mean_and_lowers_the_force_nll(tmp_path):
    from ase.calculators.emt import EMT

    from tfn_md.data.loader import GraphDataset
    from tfn_md.data.writer import write_atoms
    from tfn_md.train.uncertainty import calibrate_heads, frame_spreads_and_errors

    frames = []
    for s in range(12):
        atoms = bulk("Cu", cubic=True)
        atoms.rattle(0.05 + 0.02 * s, seed=s)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    write_atoms(tmp_path / "cu.h5", frames)
    torch.manual_seed(0)
    model = TFN(species=["Cu"], channels=8, l_max=1, layers=2, cutoff=3.5,
                energy_heads=4).double()
    data = GraphDataset(tmp_path / "cu.h5", 3.5)
    graph = atoms_to_graph(frames[3], 3.5, torch.float64, "cpu")
    before = compute_response(model, graph, forces=True, energy_only=True)
    result = calibrate_heads(model, data, steps=200)
    after = compute_response(model, graph, forces=True, energy_only=True)
    assert result["nll_after"] < result["nll_before"]
    assert torch.allclose(before[keys.ENERGY], after[keys.ENERGY], atol=1e-10)
    assert torch.allclose(before[keys.FORCES], after[keys.FORCES], atol=1e-10)
    spread = frame_spreads_and_errors(model, data)
    # calibrated: the mean predicted spread is of the size of the mean error
    assert 0.3 < spread["spread_rms"].mean() / spread["error_rms"].mean() < 3.0


def test_compiled_path_returns_the_heads_spread(compiler, tmp_path, monkeypatch):
    monkeypatch.setenv("TFN_MD_CACHE", str(tmp_path / "cache"))
    model = _model(heads=4)
    atoms = _ethanol()
    eager = TFNCalculator(model, compile=False)
    fast = TFNCalculator(model, compile=True)
    e1 = eager.get_potential_energy(atoms)
    e2 = fast.get_potential_energy(atoms)
    assert fast.engine.compiled is not None and fast.engine.compiled.n_programs == 1
    assert e2 == pytest.approx(e1, abs=1e-9)
    assert fast.results[keys.ENERGY_SPREAD] == pytest.approx(
        eager.results[keys.ENERGY_SPREAD], abs=1e-9)
    assert np.allclose(fast.results[keys.FORCES], eager.results[keys.FORCES], atol=1e-8)
