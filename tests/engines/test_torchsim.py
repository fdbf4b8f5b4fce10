"""tfn_md.engines.torchsim: the TFN as a torch-sim ModelInterface, against TFNCalculator."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.stress import voigt_6_to_full_3x3_stress

from tests.helpers import make_model, require_extra, triclinic_cu
from tfn_md.ase import TFNCalculator
from tfn_md.graph import neighbour_list

ts = require_extra("torch_sim", "torchsim")

from torch_sim.models.interface import validate_model_outputs

from tfn_md.engines.torchsim import BatchVerletList, TFNModel

TOL = 1e-5  # eV, eV/A (and eV/A^3): float64, the acceptance criterion


def molecules(seed=0):
    """Molecules of different sizes and elements, rattled: ethanol (twice), methanol, water."""
    mols = [molecule("CH3CH2OH"), molecule("CH3OH"), molecule("H2O"), molecule("CH3CH2OH")]
    for k, a in enumerate(mols):
        a.rattle(0.05, seed=seed + k)
    return mols


def reference(calc, frames, stress=False):
    """Energies [B], forces [n, 3] (and stress [B, 3, 3]) of ``calc``, one frame at a time."""
    energy = np.array([calc.get_potential_energy(a) for a in frames])
    forces = np.concatenate([calc.get_forces(a) for a in frames])
    if not stress:
        return energy, forces, None
    return energy, forces, np.stack([voigt_6_to_full_3x3_stress(calc.get_stress(a))
                                     for a in frames])


def nvt_langevin():
    """torch-sim's NVT Langevin integrator for ``ts.integrate`` (0.3: a function; from 0.4,
    on Python >= 3.12: ``ts.Integrator.nvt_langevin``)."""
    return ts.Integrator.nvt_langevin if hasattr(ts, "Integrator") else ts.nvt_langevin


def test_validate_model_outputs():
    """torch-sim's own check (bulk Si and Fe; from 0.4 also Mg and benzene: a random-weight
    model of those elements), float64; it switches stress on through the setter, so the
    stress is checked too."""
    model = TFNModel(make_model(species=("H", "C", "Mg", "Si", "Fe")), dtype=torch.float64,
                     compile=False)
    assert not model.compute_stress
    validate_model_outputs(model, torch.device("cpu"), torch.float64)
    assert model.compute_stress and model.compute_forces


def test_molecule_batch_equals_calculator():
    """One call on ethanol, methanol, water and ethanol (rattled) equals the calculator's
    four calls, also after the atoms moved (Verlet lists reused or rebuilt)."""
    model = TFNModel("ethanol-gfn2", dtype=torch.float64, compile=False)
    calc = TFNCalculator("ethanol-gfn2", dtype=torch.float64, compile=False)
    assert model.dtype == torch.float64 and TFNModel("ethanol-gfn2").dtype == torch.float32
    for step, amplitude in enumerate((0.0, 0.1, 0.4)):  # below and above skin / 2
        frames = molecules()
        for k, a in enumerate(frames):
            a.positions += np.random.default_rng(step * 10 + k).normal(0, amplitude, (len(a), 3))
        state = ts.io.atoms_to_state(frames, model.device, model.dtype)
        positions = state.positions.clone()
        out = model(state)
        assert set(out) == {"energy", "forces"}
        assert out["energy"].shape == (4,) and out["forces"].shape == (state.n_atoms, 3)
        assert out["energy"].dtype == torch.float64
        assert torch.equal(state.positions, positions)
        energy, forces, _ = reference(calc, frames)
        assert np.abs(out["energy"].numpy() - energy).max() < TOL
        assert np.abs(out["forces"].numpy() - forces).max() < TOL
    # the state as a dict gives the same
    as_dict = {"positions": state.positions, "cell": state.cell, "pbc": state.pbc,
               "atomic_numbers": state.atomic_numbers, "system_idx": state.system_idx}
    again = model(as_dict)
    assert torch.allclose(again["energy"], out["energy"], rtol=0, atol=1e-12)


def test_periodic_cu_batch_with_stress_equals_calculator():
    """Periodic Cu cells of different shapes and sizes (triclinic, smaller than twice the
    cutoff: periodic images) in one call: energy, forces and stress equal the calculator's."""
    frames = [triclinic_cu(), triclinic_cu((2, 1, 1), seed=1),
              bulk("Cu", "fcc", a=3.65, cubic=True).repeat((2, 2, 1))]
    frames[2].rattle(0.05, seed=2)
    model = TFNModel("cu-emt", dtype="float64", compute_stress=True, compile=False)
    calc = TFNCalculator("cu-emt", dtype=torch.float64, compile=False)
    out = model(ts.io.atoms_to_state(frames, model.device, model.dtype))
    energy, forces, stress = reference(calc, frames, stress=True)
    assert out["stress"].shape == (3, 3, 3)
    assert np.abs(out["energy"].numpy() - energy).max() < TOL
    assert np.abs(out["forces"].numpy() - forces).max() < TOL
    assert np.abs(out["stress"].numpy() - stress).max() < TOL
    assert np.abs(stress).max() > 1e-4  # not vacuous


def test_batch_verlet_list_equals_fresh_search():
    """Reused while atoms move less than skin / 2, rebuilt beyond: always exactly the pairs
    of a fresh search of each system (periodic Cu cells, images included)."""
    frames = [triclinic_cu(), triclinic_cu((2, 1, 1), seed=1)]
    counts = [len(a) for a in frames]
    numbers = np.concatenate([a.numbers for a in frames])
    cells = np.stack([a.cell.array for a in frames])
    pbc = np.ones(3, bool)
    verlet = BatchVerletList(4.0, skin=0.5)
    rng = np.random.default_rng(0)
    for step, amplitude in enumerate((0.0, 0.05, 0.05, 0.3)):
        for a in frames:
            a.positions += rng.normal(0, amplitude, (len(a), 3))
        positions = np.concatenate([a.positions for a in frames])
        i, j, s = verlet(numbers, positions, cells, pbc, counts)
        got = sorted(zip(i.tolist(), j.tolist(), map(tuple, s.tolist())))
        expected, start = [], 0
        for a in frames:
            fi, fj, fs = neighbour_list(a, 4.0)
            expected += zip((fi + start).tolist(), (fj + start).tolist(), map(tuple, fs.tolist()))
            start += len(a)
        assert got == sorted(expected), step
    assert 2 <= verlet.n_builds <= 3  # the first search, reused, rebuilt after 0.3 A


def test_clear_errors():
    model = TFNModel("ethanol-gfn2", dtype=torch.float64, compile=False)
    copper = bulk("Cu", "fcc", a=3.6)
    cluster = copper.repeat(2)
    cluster.pbc = False
    with pytest.raises(ValueError, match=r"\['Cu'\] not known"):
        model(ts.io.atoms_to_state([molecule("H2O"), cluster], model.device, model.dtype))
    model.compute_stress = True  # molecules: zero stress (V -> infinity), no error
    out = model(ts.io.atoms_to_state([molecule("H2O"), molecule("CH4")], model.device,
                                     model.dtype))
    assert out["stress"].shape == (2, 3, 3) and not out["stress"].any()
    water = molecule("H2O")
    water.pbc = True  # periodic, but no cell
    with pytest.raises(ValueError, match=r"system\(s\) \[1\] are periodic .* cell is missing"):
        model(ts.io.atoms_to_state([molecule("H2O", cell=(5, 5, 5), pbc=True), water],
                                   model.device, model.dtype))
    model.compute_stress = False
    overlap = molecule("H2O")
    overlap.positions[1] = overlap.positions[0]
    with pytest.raises(ValueError, match="system 1: atoms 0 and 1"):
        model(ts.io.atoms_to_state([molecule("H2O"), overlap], model.device, model.dtype))
    with pytest.raises(TypeError, match="compute_stress"):
        model.compute_stress = "yes"
    with pytest.raises(TypeError, match="potential"):
        TFNModel(3.0)


def test_integrate_nvt_langevin():
    """torch-sim's runner with its NVT Langevin integrator, a few steps on four molecules."""
    model = TFNModel("ethanol-gfn2", compile=False)
    final = ts.integrate(molecules(), model, integrator=nvt_langevin(), n_steps=10,
                         temperature=300.0, timestep=0.0005)  # ps
    assert final.n_systems == 4
    assert torch.isfinite(final.energy).all() and torch.isfinite(final.positions).all()
    energy = model(final)["energy"]
    assert torch.isfinite(energy).all()


@pytest.mark.slow
def test_compiled_batch_equals_eager(compiler):
    """compile=True: a batch of molecules runs the compiled whole-response program as one
    disconnected structure; the same energies and forces as the eager path (float64)."""
    model = TFNModel("ethanol-gfn2", dtype=torch.float64, compile=True)
    eager = TFNModel("ethanol-gfn2", dtype=torch.float64, compile=False)
    state = ts.io.atoms_to_state(molecules(), model.device, model.dtype)
    out, ref = model(state), eager(state)
    assert model.compiled.n_programs == 1
    assert torch.allclose(out["energy"], ref["energy"], rtol=0, atol=1e-8)
    assert torch.allclose(out["forces"], ref["forces"], rtol=0, atol=1e-8)
