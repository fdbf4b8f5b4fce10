"""Bad input raises a clear error naming the problem; edge cases that are not errors work."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError

from tests.helpers import ethanol, make_model
from tfn_md import TFNCalculator, load_potential, save_potential
from tfn_md.checkpoint import CheckpointError


@pytest.fixture
def calc():
    return TFNCalculator(make_model())


def test_unknown_element(calc):
    atoms = Atoms("CHN", positions=[[0, 0, 0], [1, 0, 0], [0, 1.2, 0]])
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"\['N'\] not known to this model"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions(calc, bad):
    atoms = ethanol()
    atoms.positions[3, 1] = bad
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"NaN or infinite.*\[3\]"):
        atoms.get_forces()


def test_pbc_with_singular_cell():
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.cell[2] = atoms.cell[0] * 2.0  # coplanar cell vectors
    atoms.calc = TFNCalculator(make_model(species=["Cu"]))
    with pytest.raises(ValueError, match="singular"):
        atoms.get_potential_energy()
    slab = Atoms("Cu", positions=[[0, 0, 0]], cell=[3, 3, 0], pbc=True)
    slab.calc = TFNCalculator(make_model(species=["Cu"]))
    with pytest.raises(ValueError, match="singular"):
        slab.get_potential_energy()


def test_overlapping_atoms(calc):
    atoms = Atoms("CH", positions=[[0, 0, 0], [0, 0, 1e-7]])
    atoms.calc = calc
    with pytest.raises(ValueError, match="closer than 1e-06 A"):
        atoms.get_potential_energy()


def test_stress_without_full_pbc(calc):
    atoms = ethanol()
    atoms.calc = calc
    with pytest.raises(PropertyNotImplementedError, match="fully periodic"):
        atoms.get_stress()


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a tfn_md checkpoint"):
        load_potential(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a tfn_md checkpoint"):
        TFNCalculator(other)
    with pytest.raises(FileNotFoundError, match="no checkpoint file or shipped potential"):
        load_potential(tmp_path / "missing.pt")


def test_future_checkpoint_version(tmp_path):
    path = tmp_path / "m.pt"
    save_potential(make_model(), path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = 99
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="format version 99, newer"):
        load_potential(path)


def test_empty_atoms(calc):
    atoms = Atoms()
    atoms.calc = calc
    assert atoms.get_potential_energy() == 0.0
    assert atoms.get_forces().shape == (0, 3)


def test_lone_atom_gives_its_e0():
    model = make_model()
    model.shift.fill_(0.0)  # E0 carries the per-element reference, as after training
    for symbol in model.species:
        atoms = Atoms(symbol, positions=[[1.0, 2.0, 3.0]])
        atoms.calc = TFNCalculator(model)
        e0 = float(model.e0[model.species.index(symbol)])
        assert abs(atoms.get_potential_energy() - e0) < 1e-12
        assert np.all(atoms.get_forces() == 0.0)
    # with a shift, E = shift + E0; an atom far from any other is isolated too
    model.shift.fill_(0.25)
    pair = Atoms("OC", positions=[[0, 0, 0], [50, 0, 0]])
    pair.calc = TFNCalculator(model)
    expected = 2 * 0.25 + float(model.e0[model.species.index("O")] + model.e0[1])
    assert abs(pair.get_potential_energy() - expected) < 1e-12


def test_atom_without_neighbours_in_a_molecule(calc):
    atoms = ethanol()
    atoms += Atoms("H", positions=[[30.0, 0, 0]])
    atoms.calc = calc
    forces = atoms.get_forces()
    assert np.all(forces[-1] == 0.0)
    assert np.isfinite(forces).all()


def test_periodic_structure_mixed_pbc_slab():
    from ase.build import fcc111

    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    assert slab.pbc.tolist() == [True, True, False]
    slab.calc = TFNCalculator(make_model(species=["Cu"]))
    assert np.isfinite(slab.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()
