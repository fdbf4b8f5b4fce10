"""The energy-zero refit: the least-squares E0 correction, forces untouched."""

import numpy as np
import pytest
import torch

from tests.helpers import emt_dataset, make_model
from tfn_md import TFNCalculator
from tfn_md.data.loader import GraphDataset
from tfn_md.data.reader import H5Dataset
from tfn_md.train.energy_zero import refit_energy_zero


def _errors(model, path):
    """[B] E_model - E*, [B, n_species] element counts, forces of every frame."""
    calc = TFNCalculator(model, dtype=torch.float64)
    errors, counts, forces = [], [], []
    with H5Dataset(path) as ds:
        for atoms in ds:
            reference = atoms.get_potential_energy()
            atoms.calc = calc
            errors.append(atoms.get_potential_energy() - reference)
            counts.append([int((atoms.numbers == z).sum()) for z in (1, 6, 8, 29)])
            forces.append(atoms.get_forces())
    return np.array(errors), np.array(counts, float), forces


def test_refit_is_the_least_squares_e0_and_leaves_forces(tmp_path):
    path = emt_dataset(tmp_path / "emt.h5", n_cu=6, n_mol=6)
    model = make_model(species=("H", "C", "O", "Cu"))
    model.e0.copy_(torch.tensor([-0.3, 1.2, 0.4, 2.0], dtype=model.e0.dtype))
    before, counts, forces_before = _errors(model, path)
    result = refit_energy_zero(model, GraphDataset(path, model.cutoff))
    after, _, forces_after = _errors(model, path)
    # the stated least-squares problem, solved independently
    expected = np.linalg.lstsq(counts, -before, rcond=None)[0]
    assert np.allclose(result["delta_e0_eV"], expected, atol=1e-8)
    assert np.allclose(after, before + counts @ expected, atol=1e-8)
    # optimal: the residual is orthogonal to every element count, and E0 moved
    assert np.abs(counts.T @ after).max() < 1e-8 * np.abs(counts.T @ before).max()
    assert np.abs(expected).max() > 0.1
    assert result["offset_after_meV_per_atom"] == pytest.approx(
        1000 * np.mean(after / counts.sum(1)), abs=1e-6)
    for f0, f1 in zip(forces_before, forces_after, strict=True):
        assert np.allclose(f0, f1, atol=1e-12)


def test_refit_needs_energies(tmp_path):
    from ase.build import molecule

    from tfn_md.data.writer import write_atoms

    write_atoms(tmp_path / "bare.h5", [molecule("CH3CH2OH")], append=False)
    model = make_model()
    with pytest.raises(ValueError, match="needs structures with energies"):
        refit_energy_zero(model, GraphDataset(tmp_path / "bare.h5", model.cutoff))
