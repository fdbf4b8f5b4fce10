"""The inference fast paths against the exact eager path and against physics:

* tabulated radial functions (the calculator's default) against the radial MLPs
  (``exact=True``), on random models and on the shipped potentials (bound: 1e-5 eV/A);
* the compiled whole-response program (``compile=True``) against the eager path, and on
  its own: rotations, translations, permutations, finite differences of forces and
  stress, NVE, one atom, several shape buckets, the fallback when compiling fails.

Compiled programs go to a per-session cache folder (``TFN_MD_CACHE``), so a program
compiled once serves every test that asks for the same model and shapes."""

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

import tfn_md.inference.compiled as compiled
from tests.helpers import (
    TOL,
    ethanol,
    finite_difference_errors,
    make_model,
    random_rotation_np,
    triclinic_cu,
)
from tfn_md import TFNCalculator, load_potential
from tfn_md.data import H5Dataset

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFN_MD_CACHE", str(tmp_path_factory.mktemp("compiled")))
        yield


def results(calc, atoms, stress=False):
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
           "energies": atoms.get_potential_energies()}
    if stress:
        out["stress"] = atoms.get_stress()
    return out


def molecule_model(dtype=torch.float64):
    """The random model the compiled molecule tests share (one compiled program each)."""
    model = make_model(dtype=dtype, cutoff=5.0)
    model.scale.fill_(1.3)
    return model


def rattled(atoms, seed, amount=0.1):
    atoms = atoms.copy()
    atoms.rattle(amount, seed=seed)
    return atoms


# ---- radial tables ---------------------------------------------------------------------

@pytest.mark.parametrize("l_max,layers,seed", [(2, 2, 0), (3, 2, 1), (2, 3, 2)])
def test_tables_match_mlp_on_random_models(l_max, layers, seed):
    model = make_model(l_max=l_max, layers=layers, seed=seed, cutoff=4.5)
    exact = TFNCalculator(model, exact=True, compile=False)
    tables = TFNCalculator(model, compile=False)
    assert tables.model.tabulated and not exact.model.tabulated
    for k in range(3):
        atoms = rattled(ethanol(), seed=k, amount=0.2)
        a, b = results(exact, atoms), results(tables, atoms)
        assert np.abs(a["forces"]).max() > 1e-2
        assert np.abs(a["forces"] - b["forces"]).max() <= 1e-5
        assert abs(a["energy"] - b["energy"]) <= 1e-6


def test_tables_match_mlp_periodic_with_stress():
    model = make_model(species=["Cu"], cutoff=4.5, seed=3)
    atoms = triclinic_cu(repeat=(2, 2, 1), rattle=0.15)
    a = results(TFNCalculator(model, exact=True, compile=False), atoms, stress=True)
    b = results(TFNCalculator(model, compile=False), atoms, stress=True)
    assert np.abs(a["forces"] - b["forces"]).max() <= 1e-5
    assert np.abs(a["stress"] - b["stress"]).max() <= 1e-6


@pytest.mark.parametrize("name,data", [("ethanol-gfn2", "ethanol-gfn2_test.h5"),
                                       ("cu-emt", "cu-emt_valid.h5")])
def test_tables_match_mlp_on_shipped_potentials(name, data):
    structures = list(H5Dataset(ROOT / "datasets" / data))
    model = load_potential(name)
    exact = TFNCalculator(model, dtype=torch.float64, exact=True, compile=False)
    tables = TFNCalculator(model, dtype=torch.float64, compile=False)
    assert tables.model.tabulated
    worst = 0.0
    for atoms in structures[:: max(1, len(structures) // 10)]:
        atoms.calc = None
        worst = max(worst, np.abs(results(exact, atoms)["forces"]
                                  - results(tables, atoms)["forces"]).max())
    print(f"{name}: largest force deviation of the tables {worst:.2e} eV/A")
    assert worst <= 1e-5


def test_table_refuses_models_without_cutoff():
    model = make_model(cutoff=None, basis="gaussian")
    assert not model.tabulate() and not model.tabulated


# ---- compiled whole-response program -----------------------------------------------------

def test_bucket():
    assert [compiled.bucket(x) for x in (0, 16, 17, 72, 100, 1000)] == [16, 16, 18, 72, 104, 1024]
    for x in range(1, 5000, 7):
        b = compiled.bucket(x)
        assert x <= b <= max(16, int(x * 1.125) + 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_compiled_matches_eager_and_is_equivariant(dtype, compiler):
    model = molecule_model(dtype)
    eager = TFNCalculator(model, compile=False)
    fast = TFNCalculator(model, compile=True)
    tol = TOL[dtype]
    base = rattled(ethanol(), seed=0)
    ref = results(eager, base)
    got = results(fast, base)
    assert fast.engine.compiled.programs, "the compiled program was not used"
    scale = np.abs(ref["forces"]).max()
    assert abs(got["energy"] - ref["energy"]) <= 10 * tol * abs(ref["energy"])
    assert np.abs(got["forces"] - ref["forces"]).max() <= 10 * tol * scale
    np.testing.assert_allclose(got["energies"], ref["energies"], atol=10 * tol)
    rng = np.random.default_rng(0)
    for _ in range(3):  # rotations, translations and permutations through the program
        rot = random_rotation_np(rng)
        perm = rng.permutation(len(base))
        moved = base[perm]
        moved.positions = moved.positions @ rot.T + rng.normal(size=3) * 5
        out = results(fast, moved)
        assert abs(out["energy"] - ref["energy"]) <= 10 * tol * abs(ref["energy"])
        assert np.abs(out["forces"] - ref["forces"][perm] @ rot.T).max() <= 10 * tol * scale
    assert fast.engine.compiled.n_programs == 1  # one shape bucket served all of them


def test_compiled_forces_and_stress_match_finite_differences(compiler):
    model = make_model(species=["Cu"], cutoff=4.5)
    atoms = triclinic_cu(repeat=(2, 1, 1), rattle=0.15)
    atoms.calc = TFNCalculator(model, compile=True)
    stress, forces = atoms.get_stress(), atoms.get_forces()
    assert atoms.calc.engine.compiled.programs
    force_error, stress_error = finite_difference_errors(atoms, stress=True)
    assert stress_error < 1e-6 and force_error < 1e-6
    eager = results(TFNCalculator(model, compile=False), atoms, stress=True)
    assert np.abs(stress - eager["stress"]).max() < 1e-10
    assert np.abs(forces - eager["forces"]).max() < 1e-10


def test_compiled_molecule_finite_differences_and_nve(compiler):
    model = molecule_model()
    atoms = rattled(ethanol(), seed=2)
    atoms.calc = TFNCalculator(model, compile=True)
    assert finite_difference_errors(atoms)[0] < 1e-6
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    energies = []
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=5)
    dyn.run(400)
    spread = (max(energies) - min(energies)) / len(atoms)
    print(f"compiled NVE: total-energy spread {spread:.2e} eV/atom")
    assert spread < 1e-4
    assert atoms.calc.engine.compiled.n_programs == 1
    # every pair within the cutoff (a complete graph, no images) cannot grow: the program
    # has no edge headroom beyond its bucket
    (capacity,) = next(iter(atoms.calc.engine.compiled.programs.values()))
    pairs = len(atoms) * (len(atoms) - 1)
    assert capacity == compiled.bucket(pairs) < compiled.bucket(compiled.HEADROOM * pairs)


def test_compiled_one_atom_and_new_buckets(compiler):
    model = molecule_model()
    calc = TFNCalculator(model, compile=True)
    lone = Atoms("O", positions=[[0.0, 0.0, 0.0]])
    out = results(calc, lone)
    assert abs(out["energy"] - float(model.e0[2] + model.shift)) < 1e-10
    assert calc.engine.compiled.n_programs == 1
    assert np.abs(out["forces"]).max() == 0.0
    eager = TFNCalculator(model, compile=False)
    water = Atoms("H2O", positions=[[0.76, 0.59, 0], [-0.76, 0.59, 0], [0, 0, 0]])
    a, b = results(calc, water), results(eager, water)  # same atom bucket, new edges
    assert abs(a["energy"] - b["energy"]) < 1e-10
    assert np.abs(a["forces"] - b["forces"]).max() < 1e-10
    assert calc.engine.compiled.n_programs == 1  # lone atom and water share a program


def test_auto_compiles_after_repeated_calls(monkeypatch, compiler):
    monkeypatch.setenv("TFN_MD_COMPILE", "1")
    monkeypatch.setattr(compiled, "COMPILE_AFTER", 3)
    model = molecule_model()
    calc = TFNCalculator(model)  # compile="auto"
    atoms = rattled(ethanol(), seed=0)
    atoms.calc = calc
    for k in range(3):
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()
        assert not calc.engine.compiled.programs  # still eager
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert calc.engine.compiled.programs


def test_compile_failure_falls_back_to_eager_once(monkeypatch, tmp_path):
    monkeypatch.setenv("TFN_MD_CACHE", str(tmp_path))

    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))  # the compiling child's
    model = make_model(cutoff=5.0, seed=7)
    atoms = rattled(ethanol(), seed=1)
    eager = results(TFNCalculator(model, compile=False), atoms)
    calc = TFNCalculator(model, compile=True)
    with pytest.warns(RuntimeWarning, match="compiling the TFN response failed"):
        first = results(calc, atoms)
    second = results(calc, rattled(atoms, seed=3, amount=0.01))  # no second warning
    assert calc.engine.compiled.failed and second["forces"].shape == (9, 3)
    np.testing.assert_allclose(first["forces"], eager["forces"], atol=1e-12)



def test_no_compiled_program_where_radial_functions_do_not_vanish():
    """Padding edges lie beyond the cutoff: only models whose radial functions vanish there
    (tables, or the Bessel basis with its envelope) get the compiled program."""
    model = make_model(basis="gaussian", cutoff=4.0)
    assert TFNCalculator(model, exact=True, compile=True).engine.compiled is None
    assert TFNCalculator(model, compile=True).engine.compiled is not None  # tabulated: zero beyond
