"""The whole model and the calculator are invariant/equivariant under E(3) rigid motions
(proper rotations) and permutations, in float32 and float64."""

import numpy as np
import pytest
import torch

from tests.helpers import TOL, ethanol, make_model, random_rotation_np, triclinic_cu
from tfn_md import TFNCalculator
from tfn_md.graph import atoms_to_graph
from tfn_md.inference.response import compute_response


def _run(model, atoms, dtype):
    out = compute_response(model, atoms_to_graph(atoms, model.cutoff, dtype=dtype))
    return {k: v.detach().double().numpy() for k, v in out.items()}


@pytest.mark.parametrize("l_max", [2, 3])
def test_model_equivariance(l_max, dtype):
    model = make_model(dtype=dtype, l_max=l_max, layers=3)
    rng = np.random.default_rng(l_max)
    atoms = ethanol()
    atoms.rattle(0.05, seed=1)
    ref = _run(model, atoms, dtype)
    scale_f = np.abs(ref["forces"]).max()
    scale_v = np.abs(ref["vectors"]).max()
    assert scale_f > 1e-2 and scale_v > 1e-2  # non-trivial outputs
    tol = TOL[dtype]
    for _ in range(5):
        rot = random_rotation_np(rng)
        perm = rng.permutation(len(atoms))
        moved = atoms[perm]
        moved.positions = moved.positions @ rot.T + rng.normal(size=3) * 5
        out = _run(model, moved, dtype)
        assert abs(out["energy"][0] - ref["energy"][0]) <= tol * abs(ref["energy"][0])
        assert np.allclose(out["energies"], ref["energies"][perm], rtol=0, atol=tol * 10)
        assert np.abs(out["forces"] - ref["forces"][perm] @ rot.T).max() <= tol * scale_f * 10
        assert np.abs(out["vectors"] - ref["vectors"][perm] @ rot.T).max() <= tol * scale_v * 10


def test_calculator_equivariance_periodic_triclinic(dtype):
    model = make_model(species=["Cu"], dtype=dtype, cutoff=4.5)
    atoms = triclinic_cu(repeat=(2, 1, 1))
    atoms.calc = TFNCalculator(model)
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    rng = np.random.default_rng(0)
    tol = TOL[dtype]
    for _ in range(3):
        rot = random_rotation_np(rng)
        perm = rng.permutation(len(atoms))
        moved = atoms[perm]
        moved.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
        moved.positions = atoms.positions[perm] @ rot.T + rng.normal(size=3)
        moved.calc = TFNCalculator(model)
        assert abs(moved.get_potential_energy() - e) <= tol * abs(e)
        assert np.abs(moved.get_forces() - f[perm] @ rot.T).max() <= 10 * tol * np.abs(f).max()
        s_rot = moved.get_stress(voigt=False)
        assert np.abs(s_rot - rot @ s @ rot.T).max() <= 10 * tol * np.abs(s).max()
    # a lattice translation of one atom changes nothing
    shifted = atoms.copy()
    shifted.positions[0] += atoms.cell[1]
    shifted.calc = TFNCalculator(model)
    assert abs(shifted.get_potential_energy() - e) <= tol * abs(e)


def test_paper_all_pairs_mode_equivariance(dtype):
    model = make_model(dtype=dtype, cutoff=None, basis="gaussian", l_max=2)
    atoms = ethanol()
    ref = _run(model, atoms, dtype)
    rot = random_rotation_np(np.random.default_rng(3))
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T + 2.0
    out = _run(model, moved, dtype)
    tol = TOL[dtype]
    assert abs(out["energy"][0] - ref["energy"][0]) <= tol * abs(ref["energy"][0])
    assert np.abs(out["forces"] - ref["forces"] @ rot.T).max() <= 10 * tol * np.abs(
        ref["forces"]
    ).max()


def test_float32_matches_float64():
    m64 = make_model(dtype=torch.float64)
    m32 = make_model(dtype=torch.float32)
    atoms = ethanol()
    a, b = _run(m64, atoms, torch.float64), _run(m32, atoms, torch.float32)
    assert abs(a["energy"][0] - b["energy"][0]) < 1e-4 * abs(a["energy"][0])
    assert np.abs(a["forces"] - b["forces"]).max() < 1e-4
