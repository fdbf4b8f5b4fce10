"""Issue 11: every bad input at the model, calculator, neighbour-search and checkpoint
boundaries is an error that names the field, the value and what is allowed."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from tests.helpers import ethanol, make_model
from tfn_md import TFN, TFNCalculator, load_potential, save_potential
from tfn_md.checkpoint import CheckpointError
from tfn_md.graph import neighbour_list


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cutoff": 0}, r"cutoff = 0 is not allowed: a finite number > 0"),
        ({"cutoff": -2.0}, r"cutoff = -2.0 is not allowed"),
        ({"cutoff": float("nan")}, r"cutoff = nan is not allowed"),
        ({"cutoff": float("inf")}, r"cutoff = inf is not allowed"),
        ({"cutoff": "5"}, r"cutoff = '5' is not allowed"),
        ({"channels": 0}, r"channels = 0 is not allowed: an integer >= 1"),
        ({"channels": "8"}, r"channels = '8' is not allowed: an integer"),
        ({"channels": 8.0}, r"channels = 8.0 is not allowed: an integer"),
        ({"layers": 0}, r"layers = 0 is not allowed: an integer >= 1"),
        ({"n_basis": 0}, r"n_basis = 0 is not allowed: an integer >= 1"),
        ({"radial_hidden": -1}, r"radial_hidden = -1 is not allowed"),
        ({"l_max": -1}, r"l_max = -1 is not allowed"),
        ({"l_max": True}, r"l_max = True is not allowed"),
        ({"avg_num_neighbors": 0.0}, r"avg_num_neighbors = 0.0 is not allowed"),
        ({"gaussian_range": [5.0, 1.0], "basis": "gaussian"}, r"gaussian_range = \[5.0, 1.0\]"),
        ({"residual": "yes"}, r"residual = 'yes' is not allowed: True or False"),
        ({"species": ["H", "H"]}, r"species = \['H', 'H'\] is not allowed: each element once"),
        ({"species": []}, r"species = \[\] is not allowed: at least one element"),
        ({"species": ["H", "Qq"]}, r"unknown: \['Qq'\]"),
    ],
)
def test_model_arguments_are_checked_when_built(kwargs, message):
    kwargs = {"species": ["H", "C"], **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        TFN(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "float16"}, r"dtype = 'float16' is not allowed: torch.float32 or"),
        ({"dtype": torch.float16}, r"dtype = torch.float16 is not allowed"),
        ({"dtype": torch.bfloat16}, r"dtype = torch.bfloat16 is not allowed"),
        ({"dtype": "double!"}, r"dtype = 'double!' is not allowed"),
        ({"dtype": np.int64}, r"is not allowed: torch.float32 or torch.float64"),
        ({"skin": -0.1}, r"skin = -0.1 is not allowed: a finite number >= 0"),
        ({"skin": float("nan")}, r"skin = nan is not allowed"),
        ({"device": "gpu0"}, r"device = 'gpu0' is not allowed: a torch device"),
        ({"compile": "no"}, r"compile = 'no' is not allowed: True, False or 'auto'"),
    ],
)
def test_calculator_arguments(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TFNCalculator(make_model(), **kwargs)


def test_calculator_potential_of_wrong_type():
    with pytest.raises(TypeError, match="potential = 3 is not allowed: a checkpoint path"):
        TFNCalculator(3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.dtype("float64"), "float64"])
def test_calculator_accepts_numpy_dtypes(dtype):
    calc = TFNCalculator(make_model(), dtype=dtype)
    expected = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    assert calc.dtype == expected
    atoms = ethanol()
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())


def test_calculator_without_atoms():
    calc = TFNCalculator(make_model())
    with pytest.raises(ValueError, match="no atoms to calculate"):
        calc.get_potential_energy()
    assert np.isfinite(calc.get_potential_energy(ethanol()))


@pytest.mark.parametrize("distance", [1e6, 1e9, -3e5])
@pytest.mark.parametrize("pbc", [False, [True, True, False]])
def test_far_atom_is_an_error_not_a_crash(distance, pbc):
    """vesin dies with SIGFPE (or runs for minutes) on such boxes: a guard must stop it."""
    atoms = ethanol()
    atoms.cell = [12.0, 12.0, 12.0]
    atoms.pbc = pbc
    atoms.positions[0, 2] += distance  # z is non-periodic in both cases
    with pytest.raises(ValueError, match=r"the atoms span .* along a non-periodic direction.*"
                                         r"allowed <= 5000 A"):
        neighbour_list(atoms, 5.0)
    atoms.calc = TFNCalculator(make_model())
    with pytest.raises(ValueError, match="non-periodic direction"):
        atoms.get_potential_energy()


def test_far_atom_in_a_periodic_direction_is_wrapped_not_refused():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions[1, 0] += 1e6 * 3.6  # a whole number of cells: the same crystal
    i, _, _ = neighbour_list(atoms, 3.0)
    assert len(i) == 4 * 12


@pytest.mark.parametrize("height", [1e-2, 1e-4, 1e-7])
def test_nearly_flat_periodic_cell(height):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    cell = atoms.cell.array.copy()
    cell[2] = [3.6, 3.6, height]  # passes the rank check, far too flat to search
    atoms.set_cell(cell, scale_atoms=True)
    with pytest.raises(ValueError, match=r"the cell is nearly flat: its height along periodic "
                                         r"direction \d is .* allowed >= cutoff / 100"):
        neighbour_list(atoms, 5.0)


def test_moderately_thin_cells_still_work():
    atoms = Atoms("Cu", positions=[[0, 0, 0]], cell=[2.2, 2.2, 0.5], pbc=True)
    i, _, _ = neighbour_list(atoms, 2.0)  # 0.5 A >= 2.0 / 100
    assert len(i) > 0


# ---------------------------------------------------------------- checkpoints


def _edited(tmp_path, edit):
    path = tmp_path / "m.pt"
    save_potential(make_model(), path)
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    return path


def _set(key, value):
    return lambda c: c.__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("config", "{not json"), r"entry 'config' is not valid JSON"),
        (_set("config", "[1, 2]"), r"entry 'config' must be a JSON object with 'species'"),
        (lambda c: c.pop("state_dict"), r"entry 'state_dict' is missing"),
        (_set("state_dict", {"x": 3}), r"entry 'state_dict' is missing or not a dict of tensors"),
        (_set("dtype", "float16"), r"entry 'dtype' is 'float16', allowed: 'float32' or"),
        (_set("model", "MACE"), r"unknown model class 'MACE' \(allowed: 'TFN'\)"),
        (
            lambda c: c.__setitem__(
                "config", json.dumps({**json.loads(c["config"]), "channels": 16})
            ),
            r"weights do not match the config: Error\(s\) in loading state_dict",
        ),
        (
            lambda c: c.__setitem__("config", json.dumps({**json.loads(c["config"]), "cutoff": 0})),
            r"entry 'config' does not describe a TFN: cutoff = 0 is not allowed",
        ),
        (
            lambda c: c["state_dict"]["energy_readout.weight"].fill_(float("nan")),
            r"weight 'energy_readout.weight' holds NaN or infinite values",
        ),
        (
            lambda c: c["state_dict"]["e0"].fill_(float("inf")),
            r"weight 'e0' holds NaN or infinite values",
        ),
    ],
)
def test_bad_checkpoints_name_the_problem(tmp_path, edit, message):
    path = _edited(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message) as err:
        load_potential(path)
    assert str(path) in str(err.value)
    with pytest.raises(CheckpointError, match=message):
        TFNCalculator(path)
