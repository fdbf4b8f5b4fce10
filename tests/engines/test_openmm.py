"""OpenMM through openmm-ml (tfn_md.engines.openmm): ethanol's energy and forces from an
OpenMM Context equal TFNCalculator's (float64, 1e-5 eV and eV/A) by both routes (this
package's "tfn_md" potential and openmm-ml's "ase"); MD runs and conserves energy; ML/MM
(mechanical embedding, examples/openmm/ethanol_openmm.py) splits exactly into the TFN on
ethanol and the MM force field on the rest."""

import copy
import functools
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

from tests.helpers import require_extra

openmm = require_extra("openmm", "openmm")
require_extra("openmmml", "openmm")

from openmm import app, unit
from openmmml import MLPotential

from tfn_md.ase.calculator import TFNCalculator
from tfn_md.engines.openmm import (
    EV_IN_KJ_PER_MOL,
    NAME,
    create_system,
    topology_from_atoms,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "openmm" / "ethanol_openmm.py"
TOL = 1e-5  # eV and eV/A
SETTINGS = {"potential": "ethanol-gfn2", "dtype": "float64", "compile": False}  # as users run it
# the other tests: radial MLPs instead of their tables (same numbers to 1e-6 eV/A; an
# engine starts in 0.1 s instead of 2 s)
FAST = {**SETTINGS, "exact": True}


@functools.cache
def calculator(exact):
    return TFNCalculator(**SETTINGS, exact=exact)


def load_example():
    spec = importlib.util.spec_from_file_location("ethanol_openmm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ethanol(seed=1):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=seed)
    return atoms


def reference(atoms, exact=True):
    """TFNCalculator's (energy eV, forces eV/A) of ``atoms`` in float64."""
    atoms = atoms.copy()
    atoms.calc = calculator(exact)
    return atoms.get_potential_energy(), atoms.get_forces()


def context_of(system, positions_nm, integrator=None):
    integrator = integrator or openmm.VerletIntegrator(0.5 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm * unit.nanometer)
    return context


def energy_forces(context, groups=-1):
    """(energy eV, forces eV/A [n, 3]) of the Context's current state (``groups``: a set
    of force groups or -1, all); the inverse of the potential's conversion."""
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy / EV_IN_KJ_PER_MOL, forces / (10 * EV_IN_KJ_PER_MOL)


def test_conversion_constant():
    """ASE's constants, as openmm-ml's ASE potential; within 1e-8 of OpenMM's own."""
    openmm_value = (1 * unit.AVOGADRO_CONSTANT_NA * 1.602176634e-19 * unit.joule
                    ).value_in_unit(unit.kilojoule_per_mole)
    assert EV_IN_KJ_PER_MOL == pytest.approx(openmm_value, rel=1e-8)


@pytest.mark.parametrize("via", [NAME, "ase"])
def test_energy_and_forces_equal_calculator(via):
    atoms = ethanol()
    context = context_of(create_system(atoms, via=via, **SETTINGS), atoms.positions / 10)
    for seed in (1, 2):  # a second geometry: the force follows the Context's positions
        atoms = ethanol(seed)
        context.setPositions(atoms.positions / 10 * unit.nanometer)
        energy, forces = energy_forces(context)
        ref_energy, ref_forces = reference(atoms, exact=False)
        assert abs(energy - ref_energy) < TOL
        assert np.abs(forces - ref_forces).max() < TOL


def test_periodic_box():
    atoms = ethanol()
    atoms.cell = [11.0, 12.0, 13.0]
    atoms.pbc = True
    atoms.positions += 5.5  # near the box's centre; the force may see wrapped positions
    system = create_system(atoms, **FAST)
    assert system.usesPeriodicBoundaryConditions()
    energy, forces = energy_forces(context_of(system, atoms.positions / 10))
    ref_energy, ref_forces = reference(atoms)
    assert abs(energy - ref_energy) < TOL
    assert np.abs(forces - ref_forces).max() < TOL


def test_topology_from_atoms():
    atoms = molecule("CH3CH2OH")
    topology = topology_from_atoms(atoms, bonds=True)
    assert [a.element.symbol for a in topology.atoms()] == atoms.get_chemical_symbols()
    assert topology.getNumBonds() == 8 and topology.getPeriodicBoxVectors() is None
    assert topology_from_atoms(atoms).getNumBonds() == 0
    atoms.pbc = [True, True, False]
    with pytest.raises(ValueError, match="periodic"):
        topology_from_atoms(atoms)
    with pytest.raises(ValueError, match="via"):
        create_system(molecule("H2O"), via="torchani", **FAST)


def test_md_runs_and_conserves_energy():
    atoms = ethanol()
    system = create_system(atoms, **FAST)
    langevin = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                               0.5 * unit.femtosecond)
    langevin.setRandomNumberSeed(1)
    context = context_of(system, atoms.positions / 10, langevin)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    langevin.step(20)
    assert np.isfinite(energy_forces(context)[0])
    # NVE (OpenMM's leapfrog Verlet, 0.25 fs) from the Langevin state: over 40 steps the
    # total energy stays within 5 meV (it fluctuates by about 2 meV: 300 K ethanol's
    # kinetic energy is 0.27 eV)
    state = context.getState(getPositions=True, getVelocities=True)
    verlet = openmm.VerletIntegrator(0.25 * unit.femtosecond)
    nve = context_of(system, state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                     verlet)
    nve.setVelocities(state.getVelocities())

    def total():
        s = nve.getState(getEnergy=True)
        return (s.getPotentialEnergy() + s.getKineticEnergy()).value_in_unit(
            unit.kilojoule_per_mole) / EV_IN_KJ_PER_MOL

    totals = [total()]
    for _ in range(4):
        verlet.step(10)
        totals.append(total())
    assert np.all(np.isfinite(totals))
    assert np.ptp(totals) < 5e-3, totals


def test_pickled_force_is_rebuilt():
    """The "tfn_md" force survives copy.deepcopy (OpenMM clones a PythonForce by pickling
    its function): the copy rebuilds its engine and gives the same numbers."""
    atoms = ethanol()
    system = copy.deepcopy(create_system(atoms, **FAST))
    energy, forces = energy_forces(context_of(system, atoms.positions / 10))
    ref_energy, ref_forces = reference(atoms)
    assert abs(energy - ref_energy) < TOL
    assert np.abs(forces - ref_forces).max() < TOL


@pytest.fixture(scope="module")
def water_cluster():
    """examples/openmm/ethanol_openmm.py's ethanol among 6 TIP3P waters."""
    example = load_example()
    topology, positions, ml_atoms = example.ethanol_in_water(6)
    return example, topology, positions, ml_atoms


def test_mixed_system_splits_into_tfn_and_mm(water_cluster):
    """ML/MM (mechanical embedding): the TFN term (force group 1) is TFNCalculator's on
    ethanol; the rest is the MM energy of the whole cluster less ethanol's own MM energy."""
    example, topology, positions, ml = water_cluster
    mixed = context_of(example.mixed_system(topology, ml, **FAST), positions)
    ml_energy, ml_forces = energy_forces(mixed, {1})
    eth = molecule("CH3CH2OH")
    eth.positions = positions[ml] * 10
    ref_energy, ref_forces = reference(eth)
    assert abs(ml_energy - ref_energy) < TOL
    assert np.abs(ml_forces[ml] - ref_forces).max() < TOL
    assert np.abs(ml_forces[len(ml):]).max() == 0.0

    mm_energy, mm_forces = energy_forces(context_of(example.mm_system(topology), positions))
    eth_topology = topology_from_atoms(eth, bonds=True, residue="ETH")
    eth_energy, eth_forces = energy_forces(context_of(example.mm_system(eth_topology),
                                                      positions[ml]))
    rest_energy, rest_forces = energy_forces(mixed, {0})
    mm_forces[ml] -= eth_forces
    assert abs(rest_energy - (mm_energy - eth_energy)) < TOL
    assert np.abs(rest_forces - mm_forces).max() < TOL


def test_periodic_mixed_system(water_cluster):
    """In a periodic box with PME the "tfn_md" potential needs no mlLongRange option (it
    says it is local); openmm-ml's "ase" route does. The TFN term sees ethanol in the box."""
    example, topology, positions, ml = water_cluster
    topology = copy.deepcopy(topology)
    topology.setPeriodicBoxVectors(np.eye(3) * 2.2 * unit.nanometer)
    forcefield = app.ForceField("tip3p.xml", io.StringIO(example.ETHANOL_FFXML))
    mm = forcefield.createSystem(topology, nonbondedMethod=app.PME,
                                 nonbondedCutoff=0.9 * unit.nanometer)
    with pytest.raises(ValueError, match="mlLongRange"):
        MLPotential("ase").createMixedSystem(topology, mm, ml, calculator=calculator(True))
    positions = positions - positions.mean(0) + 1.1  # the box's centre
    mixed = MLPotential(NAME, **FAST).createMixedSystem(topology, mm, ml, forceGroup=1)
    context = context_of(mixed, positions)
    ml_energy, ml_forces = energy_forces(context, {1})
    eth = molecule("CH3CH2OH", cell=np.eye(3) * 22.0, pbc=True)
    eth.positions = positions[ml] * 10
    ref_energy, ref_forces = reference(eth)
    assert abs(ml_energy - ref_energy) < TOL
    assert np.abs(ml_forces[ml] - ref_forces).max() < TOL
    assert np.isfinite(energy_forces(context)[0])


def test_mixed_system_interpolates(water_cluster):
    """createMixedSystem(interpolate=True) deep-copies the force: lambda_interpolate = 1
    gives the mixed system's energy, 0 the MM one."""
    example, topology, positions, ml = water_cluster
    mixed = MLPotential(NAME, **FAST).createMixedSystem(
        topology, example.mm_system(topology), ml, interpolate=True)
    context = context_of(mixed, positions)
    full = energy_forces(context_of(example.mixed_system(topology, ml, **FAST), positions))
    mm = energy_forces(context_of(example.mm_system(topology), positions))
    for value, expected in ((1.0, full), (0.0, mm)):
        context.setParameter("lambda_interpolate", value)
        energy, forces = energy_forces(context)
        assert abs(energy - expected[0]) < TOL
        assert np.abs(forces - expected[1]).max() < TOL


def test_example_runs(tmp_path):
    """The example's ML/MM command, a few steps (eager: TFN_MD_COMPILE=0 from conftest)."""
    env = dict(os.environ, TFN_MD_COMPILE="0")
    out = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--waters", "4"],
                         cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
                         timeout=600)
    assert "ML/MM, 4 TIP3P waters" in out.stdout and "steps/s" in out.stdout
