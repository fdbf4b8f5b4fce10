"""Charges and dipoles (``TFNConfig.dipole``): equivariance, the total charge, ASE's API."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError

from tests.helpers import ethanol, make_model, random_rotation_np
from tfn_md import TFNCalculator


def dipole_model(dtype=torch.float64, seed=0):
    model = make_model(dtype=dtype, seed=seed, dipole=True)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        model.charge_readout.weight.normal_(0.0, 1.0)  # charges well away from zero
        model.charge_bias.normal_(0.0, 0.5)
        model.dipole_readout.weight.normal_(0.0, 1.0)
    return model


def results(model, atoms, dtype=torch.float64):
    atoms = atoms.copy()
    atoms.calc = TFNCalculator(model, dtype=dtype)
    return atoms.get_dipole_moment(), atoms.get_charges()


def test_dipole_rotates_translates_and_permutes_as_a_vector():
    model = dipole_model()
    atoms = ethanol()
    atoms.rattle(0.1, seed=3)
    mu, q = results(model, atoms)
    assert np.linalg.norm(mu) > 0.1 and np.abs(q).max() > 0.05
    rng = np.random.default_rng(0)
    for _ in range(3):
        rotation = random_rotation_np(rng)
        moved = atoms.copy()
        moved.positions = atoms.positions @ rotation.T + rng.normal(0.0, 5.0, 3)
        mu_r, q_r = results(model, moved)
        assert np.linalg.norm(mu_r - rotation @ mu) <= 1e-6 * np.linalg.norm(mu)
        assert np.allclose(q_r, q, atol=1e-12)
    order = rng.permutation(len(atoms))
    mu_p, q_p = results(model, atoms[order])
    assert np.allclose(mu_p, mu, atol=1e-12) and np.allclose(q_p, q[order], atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("charge", [None, 0, 1, -2])
def test_charges_sum_to_the_total_charge(dtype, tol, charge):
    atoms = ethanol()
    if charge is not None:
        atoms.info["charge"] = charge
    _, q = results(dipole_model(dtype), atoms, dtype)
    assert abs(q.sum() - (charge or 0)) < tol


def test_charged_dipole_depends_on_the_origin_as_physics_says():
    """mu(r + t) = mu(r) + Q t for a structure of total charge Q."""
    atoms = ethanol()
    atoms.info["charge"] = 1
    model = dipole_model()
    mu, _ = results(model, atoms)
    shift = np.array([1.0, -2.0, 0.5])
    atoms.positions += shift
    assert np.allclose(results(model, atoms)[0], mu + shift, atol=1e-10)


def test_dipole_through_ase_infrared(tmp_path):
    """ase.vibrations.Infrared runs with the calculator (dipole derivatives)."""
    from ase.vibrations import Infrared

    atoms = ethanol()
    atoms.calc = TFNCalculator(dipole_model(), dtype=torch.float64)
    ir = Infrared(atoms, name=str(tmp_path / "ir"), delta=0.01)
    ir.run()
    ir.read()
    intensities = ir.intensities
    assert len(intensities) == 3 * len(atoms) and np.isfinite(intensities).all()
    assert intensities.max() > 0


def test_without_a_dipole_head_or_periodic_a_clear_error():
    atoms = ethanol()
    atoms.calc = TFNCalculator(make_model(), dtype=torch.float64)
    with pytest.raises(PropertyNotImplementedError, match="dipole head"):
        atoms.get_dipole_moment()
    with pytest.raises(PropertyNotImplementedError, match="dipole head"):
        atoms.get_charges()
    cu = bulk("Cu", cubic=True)
    cu.calc = TFNCalculator(make_model(species=["Cu"], dipole=True), dtype=torch.float64)
    assert abs(cu.get_charges().sum()) < 1e-10
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        cu.get_dipole_moment()
    with pytest.raises(ValueError, match="dipole=True needs l = 1"):
        make_model(dipole=True, layers=1)
    make_model(dipole=True, readout_l_max=0)  # the last layer's input has l = 1


def test_a_checkpoint_without_the_head_loads_and_says_it_has_no_dipole():
    """cu-emt was written before dipole heads existed: it loads, and asking a cluster of it
    for a dipole names the missing head."""
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Cu", 2)
    atoms.calc = TFNCalculator("cu-emt", compile=False)
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError, match="dipole head"):
        atoms.get_dipole_moment()


def test_shipped_ethanol_dipole_against_gfn2():
    """ethanol-gfn2's dipole head against GFN2-xTB itself on rattled ethanol."""
    pytest.importorskip("tblite")
    from tfn_md.learn.reference import reference_factory

    make = reference_factory("GFN2-xTB")
    errors = []
    for seed in range(5):
        atoms = ethanol()
        atoms.rattle(0.05, seed=seed)
        atoms.calc = TFNCalculator("ethanol-gfn2", compile=False)
        mu = atoms.get_dipole_moment()
        atoms.calc = make("GFN2-xTB")
        errors.append(np.abs(mu - atoms.get_dipole_moment()).mean())
    assert max(errors) < 0.03, errors  # e*A per component (its card: ~0.006 at 350 K)


def test_compiled_program_gives_the_eager_dipole_and_charges(compiler):
    """The compiled program returns the charges and atomic dipoles with every call; the
    engine corrects the charges over the real atoms (not the padding): the eager numbers,
    for a neutral and a charged molecule, at every call of an MD-like sequence."""
    from tfn_md.inference.engine import Engine

    model = dipole_model()
    compiled = Engine(model, dtype=torch.float64, compile=True)
    eager = Engine(model, dtype=torch.float64, compile=False)
    atoms = ethanol()
    for charge in (None, 1):
        if charge is not None:
            atoms.info["charge"] = charge
        for k in range(3):
            atoms.rattle(0.01, seed=k)
            a = compiled(atoms, ("energy", "forces"))  # every call has them: no extra cost
            b = eager(atoms, ("energy", "forces", "dipole"))
            assert np.allclose(a["dipole"], b["dipole"], atol=1e-9)
            assert np.allclose(a["charges"], b["charges"], atol=1e-9)
            assert np.allclose(a["forces"], b["forces"], atol=1e-9)
            assert abs(a["charges"].sum() - (charge or 0)) < 1e-10
    assert compiled.compiled.n_programs == 1


def test_a_slab_has_charges_but_no_cached_dipole():
    """pbc in any direction: the dipole is never in the results, so asking for it raises
    even right after a call that computed everything."""
    cu = bulk("Cu", cubic=True)
    cu.pbc = [True, True, False]
    cu.center(vacuum=5.0, axis=2)
    cu.calc = TFNCalculator(make_model(species=["Cu"], dipole=True), dtype=torch.float64)
    cu.get_forces()
    assert "dipole" not in cu.calc.results and "charges" in cu.calc.results
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        cu.get_dipole_moment()
