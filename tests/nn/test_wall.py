"""The repulsive wall inside the training data's shortest distances (issue 22, "no holes"):
its shape, its forces and stress, and that the trainer puts it exactly where the data ends."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from tfn_md import TFN, TFNCalculator, keys
from tfn_md.data.loader import GraphDataset, shortest_distances
from tfn_md.data.reader import H5Dataset
from tfn_md.graph import atoms_to_graph
from tfn_md.nn.repulsion import WALL_EPS, wall_pair_energy
from tfn_md.train.trainer import Trainer
from tests.helpers import (
    emt_dataset,
    finite_difference_errors,
    make_model,
    small_config,
    triclinic_cu,
)


def test_wall_shape():
    r_in = torch.tensor(1.5, dtype=torch.float64)
    r = torch.tensor([0.6, 0.75, 1.2, 1.425, 1.5, 1.6, 3.0], dtype=torch.float64,
                     requires_grad=True)
    e = 2 * wall_pair_energy(r, r_in.expand(7))  # both directions of a pair
    expected = WALL_EPS * np.clip(1.5 / r.detach().numpy() - 1, 0, None) ** 3
    assert np.allclose(e.detach().numpy(), expected, rtol=1e-12, atol=0)
    assert e[4:].abs().max() == 0  # nothing at and beyond r_in
    (grad,) = torch.autograd.grad(e.sum(), r)
    assert (grad[:4] < 0).all() and grad[4:].abs().max() == 0  # repulsive inside, smooth at r_in
    assert e[0] > 10 * e[2] > 0  # steep: 1.2 A costs 0.47 eV, 0.75 A 30 eV
    none = wall_pair_energy(r, torch.zeros(7, dtype=torch.float64))  # r_in = 0: no wall
    assert none.abs().max() == 0


@pytest.mark.parametrize("periodic", [False, True])
def test_wall_forces_and_stress_are_gradients(periodic):
    if periodic:
        model = make_model(species=["Cu"], cutoff=4.0)
        model.set_wall_radius(torch.tensor([[2.6]]))
        atoms = triclinic_cu(rattle=0.3, seed=2)
    else:
        model = make_model()
        model.set_wall_radius(torch.full((3, 3), 1.6))
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.05, seed=1)
    atoms.calc = TFNCalculator(model, compile=False)
    graph = atoms_to_graph(atoms, 4.0, torch.float64)
    i, j = graph.edge_index
    lengths = (graph.positions[j] - graph.positions[i] + graph.shifts @ graph.cell[0]).norm(dim=1)
    assert (lengths < 1.6 if not periodic else lengths < 2.6).any()  # the wall acts here
    forces, stress = finite_difference_errors(atoms, stress=periodic)
    scale = max(1.0, float(np.abs(atoms.get_forces()).max()))  # central differences: O(eps^2)
    assert forces < 1e-6 * scale
    assert stress is None or stress < 1e-6 * scale


def test_wall_adds_energy_only_inside_r_in():
    model = make_model()
    atoms = molecule("CH3CH2OH")
    calc = TFNCalculator(model, compile=False)
    e_free = calc.get_potential_energy(atoms)
    model.set_wall_radius(torch.full((3, 3), 0.5))  # shorter than every pair of ethanol
    calc = TFNCalculator(model, compile=False)
    assert calc.get_potential_energy(atoms) == pytest.approx(e_free, abs=1e-12)
    h = [k for k, s in enumerate(atoms.get_chemical_symbols()) if s == "H"][:2]
    atoms.set_distance(h[0], h[1], 0.4)
    model.set_wall_radius(torch.full((3, 3), 0.0))
    e_hole = TFNCalculator(model, compile=False).get_potential_energy(atoms)
    model.set_wall_radius(torch.full((3, 3), 0.5))
    e_wall = TFNCalculator(model, compile=False).get_potential_energy(atoms)
    assert e_wall - e_hole == pytest.approx(WALL_EPS * (0.5 / 0.4 - 1) ** 3, rel=1e-9)


def test_trainer_puts_the_wall_where_the_data_ends(tmp_path):
    data = emt_dataset(tmp_path / "d.h5", n_cu=6, n_mol=6)
    trainer = Trainer(small_config(data, tmp_path / "run", epochs=1), progress=False)
    model = trainer.model
    assert model.config.wall  # on by default
    with H5Dataset(data) as h5:
        expected = shortest_distances(h5, trainer.train_set.indices, model.species, 4.0)
    assert np.allclose(model.wall_radius.numpy(), expected)
    h_h = expected[0, 0]
    assert 0.5 < h_h < 2.0  # ethanol's geminal hydrogens, rattled
    # exactly zero on every training structure
    off = TFN(**{**model.config_dict(), "wall": False}).to(model.e0.dtype)
    off.load_state_dict({k: v for k, v in model.state_dict().items() if k != "wall_radius"})
    for graph, _ in GraphDataset(data, 4.0, trainer.train_set.indices):
        with_wall = model.to(torch.float64)(graph, energy_only=True)[keys.ENERGY]
        graph_off = off.to(torch.float64)(graph, energy_only=True)[keys.ENERGY]
        assert torch.equal(with_wall, graph_off)


def test_fine_tuning_a_model_without_wall_adds_it(tmp_path):
    """run.init from a checkpoint made before the wall (wall off): the fine-tuned model has
    the wall, at this data's shortest distances; the stored weights are kept."""
    from dataclasses import replace

    from tfn_md.checkpoint import load_potential

    data = emt_dataset(tmp_path / "d.h5", n_cu=6, n_mol=6)
    cfg = small_config(data, tmp_path / "old", epochs=1)
    cfg.model["wall"] = False
    old = Trainer(cfg, progress=False)
    old.fit()
    assert not load_potential(tmp_path / "old" / "best.pt").config.wall
    new_cfg = small_config(data, tmp_path / "new", epochs=1)
    new_cfg.run = replace(new_cfg.run, init=str(tmp_path / "old" / "best.pt"))
    new = Trainer(new_cfg, progress=False)
    assert new.model.config.wall
    with H5Dataset(data) as h5:
        expected = shortest_distances(h5, new.train_set.indices, new.model.species, 4.0)
    assert np.allclose(new.model.wall_radius.numpy(), expected)
    stored = load_potential(tmp_path / "old" / "best.pt").state_dict()
    assert torch.equal(new.model.state_dict()["embedding.weight"], stored["embedding.weight"])


def test_a_warm_start_keeps_the_wall_it_starts_from(tmp_path):
    """run.init from a model with a wall, on data that comes closer than its radii (the
    frames tfn-md learn labels at close contacts): the wall stays where it was."""
    from dataclasses import replace

    from ase.calculators.emt import EMT

    from tfn_md.checkpoint import load_potential
    from tfn_md.data.writer import write_atoms

    data = emt_dataset(tmp_path / "d.h5", n_cu=6, n_mol=6)
    Trainer(small_config(data, tmp_path / "old", epochs=1), progress=False).fit()
    old = load_potential(tmp_path / "old" / "best.pt")
    squeezed = molecule("CH3CH2OH")
    h = [i for i, z in enumerate(squeezed.numbers) if z == 1][:2]
    squeezed.positions[h[1]] = squeezed.positions[h[0]] + [0.0, 0.0, 0.8]  # H-H at 0.8 A
    squeezed.calc = EMT()
    squeezed.get_potential_energy()
    write_atoms(data, [squeezed], append=True)
    new_cfg = small_config(data, tmp_path / "new", epochs=1)
    new_cfg.run = replace(new_cfg.run, init=str(tmp_path / "old" / "best.pt"))
    new = Trainer(new_cfg, progress=False)
    with H5Dataset(data) as h5:
        closest = shortest_distances(h5, range(len(h5)), new.model.species, 4.0)
    h_h = new.model.species.index("H")
    assert closest[h_h, h_h] < 0.81 < old.wall_radius[h_h, h_h]  # the data came closer
    assert torch.equal(new.model.wall_radius, old.wall_radius.to(new.model.wall_radius.dtype))
