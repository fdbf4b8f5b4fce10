"""The calculator inside ASE: relaxations and energy conservation with random-weight models."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from tests.helpers import ethanol, make_model
from tfn_md import TFNCalculator


def _assert_local_minimum(atoms, n_trials=20, delta=0.01):
    """Tightly relaxed further, random small displacements do not lower the energy."""
    assert BFGS(atoms, logfile=None).run(fmax=1e-4, steps=2000)
    rng = np.random.default_rng(0)
    e_min = atoms.get_potential_energy()
    start = atoms.positions.copy()
    for _ in range(n_trials):
        atoms.positions = start + rng.normal(scale=delta, size=start.shape)
        assert atoms.get_potential_energy() > e_min - 1e-8
    atoms.positions = start


def test_bfgs_relaxes_ethanol():
    # a random-weight model has no chemically meaningful minimum (the molecule drifts
    # apart or folds up): this checks that ASE's optimizer converges on our energy and forces
    atoms = ethanol()
    atoms.rattle(0.05, seed=0)
    atoms.calc = TFNCalculator(make_model(cutoff=5.0))
    e_start = atoms.get_potential_energy()
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() > 0.05
    assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=1000)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.01
    assert atoms.get_potential_energy() < e_start


def test_bfgs_relaxes_rattled_periodic_cu():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.1, seed=1)
    atoms.calc = TFNCalculator(make_model(species=["Cu"], cutoff=5.0, channels=16))
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() > 0.05
    start = atoms.positions.copy()
    assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.01
    _assert_local_minimum(atoms)
    print(f"Cu: largest displacement during relaxation {np.abs(atoms.positions - start).max():.3f} A")


# Random weights make no physical potential: at realistic force sizes (>= 0.1 eV/A) the
# random ethanol model pulls atoms together (down to 0.2 A), and these collisions are
# integrated with an error that scales as dt^2 (3e-3 / 2e-4 / 4e-5 eV/atom at 0.5 / 0.25
# / 0.125 fs). The Cu crystal keeps its atoms apart at realistic forces; ethanol is
# run at the model's natural scale (mean |F| ~ 0.07 eV/A).
@pytest.mark.parametrize(
    "system,scale,min_force", [("cu", 6.0, 0.1), ("ethanol", 1.3, 0.05)]
)
def test_nve_conserves_energy(system, scale, min_force):
    if system == "ethanol":
        atoms = ethanol()
        model = make_model(cutoff=5.0, channels=16)
    else:
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
        model = make_model(species=["Cu"], cutoff=5.0, channels=16)
    model.scale.fill_(scale)
    atoms.calc = TFNCalculator(model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    energies, force_norms = [], []

    def record():
        energies.append(atoms.get_total_energy())
        force_norms.append(np.linalg.norm(atoms.get_forces(), axis=1).mean())

    dyn.attach(record, interval=5)
    dyn.run(1000)
    spread = (max(energies) - min(energies)) / len(atoms)
    typical_force = float(np.mean(force_norms))
    print(f"{system}: total-energy spread {spread:.2e} eV/atom, mean |F| {typical_force:.3f} eV/A")
    assert min_force < typical_force < 5.0
    assert spread < 1e-4
