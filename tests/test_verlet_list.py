"""The Verlet skin: reusing a neighbour search changes no result, and the list is rebuilt
whenever it could be wrong (an atom moved more than skin / 2, or the cell changed)."""

import numpy as np
import pytest
import torch
from ase.md.verlet import VelocityVerlet

from tests.helpers import make_model, triclinic_cu
from tfn_md import TFNCalculator
from tfn_md.graph import VerletList, neighbour_list


def pair_set(i, j, s):
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, s.tolist())))


def test_pairs_equal_a_fresh_search_along_a_random_walk():
    atoms = triclinic_cu(repeat=(2, 2, 2), rattle=0.05)
    verlet = VerletList(cutoff=4.0, skin=0.6)
    rng = np.random.default_rng(0)
    for _ in range(40):
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        i, j, s = verlet(atoms)
        assert np.all(np.diff(i) >= 0)  # still sorted by centre
        assert pair_set(i, j, s) == pair_set(*neighbour_list(atoms, 4.0))
    assert 1 < verlet.n_builds < 40  # reused, and rebuilt when atoms moved too far


def test_rebuilt_on_large_move_and_on_cell_change():
    atoms = triclinic_cu(repeat=(2, 2, 2))
    verlet = VerletList(cutoff=4.0, skin=0.5)
    verlet(atoms)
    atoms.positions[3] += [0.2, 0.0, 0.0]  # < skin / 2: reused
    verlet(atoms)
    assert verlet.n_builds == 1
    atoms.positions[3] += [0.1, 0.0, 0.0]  # 0.3 A since the search: > skin / 2
    verlet(atoms)
    assert verlet.n_builds == 2
    atoms.set_cell(atoms.cell.array * 1.01, scale_atoms=True)
    i, j, s = verlet(atoms)
    assert verlet.n_builds == 3
    assert pair_set(i, j, s) == pair_set(*neighbour_list(atoms, 4.0))
    with pytest.raises(ValueError, match="skin"):
        VerletList(4.0, -0.1)


def test_md_with_skin_matches_md_without():
    """Two NVE runs from the same state, skin 1 A and no skin: the same trajectory (float64)."""
    model = make_model(species=("Cu",), dtype=torch.float64)
    runs = []
    for skin in (1.0, 0.0):
        atoms = triclinic_cu(repeat=(2, 2, 2), rattle=0.05)
        atoms.set_velocities(np.random.default_rng(1).normal(scale=0.02, size=(len(atoms), 3)))
        atoms.calc = TFNCalculator(model, skin=skin)
        VelocityVerlet(atoms, timestep=2.0).run(30)
        runs.append((atoms.positions.copy(), atoms.get_forces(),
                     atoms.calc.engine.neighbours.n_builds))
    (x1, f1, builds1), (x0, f0, builds0) = runs
    assert builds1 < builds0 == 31  # one search per call without a skin (31 calls)
    np.testing.assert_allclose(x1, x0, atol=1e-9)
    np.testing.assert_allclose(f1, f0, atol=1e-9)
