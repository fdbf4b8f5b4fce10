"""Forces and stress against finite differences; sum rules; smoothness at the cutoff."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from tests.helpers import ethanol, finite_difference_errors, make_model, triclinic_cu
from tfn_md import TFNCalculator


@pytest.mark.parametrize("zbl", [False, True])
def test_forces_match_finite_differences(zbl):
    atoms = ethanol()
    atoms.rattle(0.1, seed=2)
    atoms.calc = TFNCalculator(make_model(zbl=zbl))
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-4)
    assert np.abs(forces).max() > 0.05
    assert np.abs(forces - numerical).max() < 1e-6


def test_stress_matches_finite_differences_small_triclinic_cell():
    atoms = triclinic_cu()  # 1 atom, cell far smaller than twice the cutoff
    model = make_model(species=["Cu"], cutoff=4.5)
    atoms = triclinic_cu(repeat=(2, 1, 1), rattle=0.15)
    assert min(atoms.cell.lengths()) < 2 * model.cutoff
    atoms.calc = TFNCalculator(model)
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.abs(stress).max() > 1e-3
    assert np.abs(stress - numerical).max() < 1e-6
    assert finite_difference_errors(atoms)[0] < 1e-6


def test_sum_rules():
    atoms = ethanol()
    atoms.rattle(0.1, seed=3)
    atoms.calc = TFNCalculator(make_model())
    assert np.abs(atoms.get_forces().sum(axis=0)).max() < 1e-10
    assert abs(atoms.get_potential_energies().sum() - atoms.get_potential_energy()) < 1e-10
    assert atoms.get_potential_energy() == atoms.calc.get_property("free_energy", atoms)


def test_energy_and_forces_continuous_across_cutoff():
    model = make_model(species=["C"], cutoff=4.0)
    calc = TFNCalculator(model)
    rc = model.cutoff

    def energy_force(d):
        atoms = Atoms("C2", positions=[[0, 0, 0], [d, 0, 0]])
        atoms.calc = calc
        return atoms.get_potential_energy(), atoms.get_forces()[1, 0]

    e_far, f_far = energy_force(rc + 0.5)
    assert f_far == 0.0
    # energy and force approach the no-interaction values as the pair reaches the cutoff
    scan = np.linspace(rc - 0.6, rc + 0.1, 701)
    values = np.array([energy_force(d) for d in scan])
    e, f = values[:, 0], values[:, 1]
    assert np.abs(e - e_far).max() > 1e-3 and np.abs(f).max() > 1e-3  # it interacts inside
    step = scan[1] - scan[0]
    # no jumps: successive differences are bounded by a Lipschitz constant times the step
    assert np.abs(np.diff(e)).max() < 2 * np.abs(f).max() * step
    assert np.abs(np.diff(f)).max() < 50 * np.abs(f).max() * step
    for delta, bound in [(1e-2, 1e-4), (1e-3, 1e-7)]:
        e_in, f_in = energy_force(rc - delta)
        assert abs(e_in - e_far) < bound and abs(f_in) < bound * 10


def test_numerical_forces_sanity_float32_model():
    # float32 models give forces equal to float64 finite differences to float32 precision
    model = make_model(dtype=torch.float32)
    atoms = ethanol()
    atoms.calc = TFNCalculator(model, dtype=torch.float64)  # evaluated in float64
    assert atoms.calc.model.e0.dtype == torch.float64
    assert model.e0.dtype == torch.float32  # the caller's model is untouched
    assert finite_difference_errors(atoms)[0] < 1e-6


def test_energy_only_pass_matches_full_pass():
    """The calculator's energy-only pass (last layer computes l = 0 outputs only) gives the
    energy, forces and stress of the full pass, and the full pass still gives vectors."""
    from tfn_md.graph import atoms_to_graph
    from tfn_md.inference.response import compute_response

    atoms = triclinic_cu(repeat=(2, 1, 1))
    model = make_model(species=["Cu"], cutoff=4.5, l_max=3, layers=3)
    graph = atoms_to_graph(atoms, model.cutoff)
    full = compute_response(model, graph, stress=True)
    lean = compute_response(model, graph, stress=True, energy_only=True)
    assert "vectors" in full and "vectors" not in lean
    for key in ("energy", "energies", "forces", "stress"):
        torch.testing.assert_close(lean[key], full[key], rtol=1e-12, atol=1e-12)
