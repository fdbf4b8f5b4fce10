"""The LAMMPS ML-IAP interface without LAMMPS: an emulated rank's data (tests/lammps/
lammps_emulation.py) against TFNCalculator in float64, the receptive field, the file."""

import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from tfn_md import TFN, TFNCalculator
from tfn_md.graph import atoms_to_graph
from tfn_md.lammps import TFNMLIAP, export_lammps
from tfn_md.receptive import receptive_field

from .lammps_emulation import rank_data, reduce_ranks

TOL = 1e-10


def reference(atoms, potential):
    atoms = atoms.copy()
    atoms.calc = TFNCalculator(potential, dtype=torch.float64, compile=False)
    stress = atoms.get_stress() if atoms.pbc.all() else None
    return (atoms.get_potential_energy(), atoms.get_potential_energies(), atoms.get_forces(),
            stress)


def run_ranks(pot, atoms, n_ranks, comm_cutoff=None):
    """Emulated LAMMPS run: atoms split into slabs along x, one per rank."""
    rc = float(pot.model.cutoff)
    comm = pot.layers * rc + 0.5 if comm_cutoff is None else comm_cutoff
    x = atoms.positions[:, 0]
    edges = np.quantile(x, np.linspace(0, 1, n_ranks + 1)[1:-1])
    slab = np.searchsorted(edges, x)
    ranks = []
    for r in range(n_ranks):
        data = rank_data(atoms, np.nonzero(slab == r)[0], comm, rc, pot.element_types)
        pot.compute_forces(data)
        ranks.append(data)
    return reduce_ranks(atoms, ranks)


def rattled_cu(m, seed=0):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((m, m, m))
    atoms.rattle(0.1, seed=seed)
    return atoms


def alloy():
    """A random 3-layer Ag/Cu model with ZBL pairs, and a rattled Ag/Cu cell for it."""
    torch.manual_seed(0)
    model = TFN(["Ag", "Cu"], channels=8, l_max=2, layers=3, cutoff=4.0, zbl=True).double()
    atoms = rattled_cu(2, seed=5)
    atoms.symbols[::3] = "Ag"
    return model, atoms


def assert_matches(got, want, tol=TOL):
    for name, g, w in zip(("energy", "energies", "forces", "stress"), got, want):
        if w is None:
            continue
        err = np.max(np.abs(np.asarray(g) - np.asarray(w)))
        assert err <= tol, f"{name}: {err:.3g}"


@pytest.fixture(scope="module")
def cu():
    return TFNMLIAP("cu-emt", dtype="float64")


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("n_ranks", [1, 2])
def test_cu_cells_match_calculator(cu, m, n_ranks):
    atoms = rattled_cu(m, seed=m)
    assert_matches(run_ranks(cu, atoms, n_ranks), reference(atoms, "cu-emt"))


@pytest.mark.parametrize("n_ranks", [1, 2])
def test_ethanol_in_vacuum_matches_calculator(n_ranks):
    pot = TFNMLIAP("ethanol-gfn2", dtype="float64")
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)
    assert_matches(run_ranks(pot, atoms, n_ranks), reference(atoms, "ethanol-gfn2"))


def test_three_layers_two_elements_and_zbl():
    """Pruning with depth 3, element mapping and ZBL pairs, on a random alloy model."""
    model, atoms = alloy()
    pot = TFNMLIAP(model, dtype="float64")
    for n_ranks in (1, 3):
        assert_matches(run_ranks(pot, atoms, n_ranks), reference(atoms, model))


def test_compiled_program_matches_calculator(compiler, tmp_path, monkeypatch):
    """compile=True: each rank's pruned graph runs as one padded, compiled program
    (tfn_md.lammps.local_program); three layers (three depth groups), two elements and ZBL,
    on 2 emulated ranks and over steps whose group sizes change."""
    monkeypatch.setenv("TFN_MD_CACHE", str(tmp_path))
    model, base = alloy()
    pot = TFNMLIAP(model, dtype="float64", compile=True)
    for step, n_ranks in enumerate((2, 2)):
        atoms = base.copy()
        atoms.rattle(0.03, seed=step)
        assert_matches(run_ranks(pot, atoms, n_ranks), reference(atoms, model))
    assert 1 <= pot.compiled.n_programs <= 2  # programs serve later steps and ranks
    assert len(list(tmp_path.glob("*.pt2"))) == pot.compiled.n_programs


def test_too_small_comm_cutoff_gives_wrong_forces(cu):
    """Why `comm_modify cutoff >= layers x cutoff + skin` matters: with the default ghost
    shell of one cutoff, atoms one edge from the rank lack neighbours."""
    atoms = rattled_cu(2, seed=1)
    _, _, forces, _ = run_ranks(cu, atoms, 1, comm_cutoff=float(cu.model.cutoff) + 0.5)
    assert np.abs(forces - reference(atoms, "cu-emt")[2]).max() > 1e-3


def test_receptive_field_prunes_and_keeps_energies():
    """local_energies on the pruned layers equals the full forward pass on the targets,
    and the inner layers touch fewer atoms than the ghost shell holds."""
    torch.manual_seed(1)
    model = TFN(["Cu"], channels=8, l_max=1, layers=2, cutoff=4.0).double()
    atoms = rattled_cu(3, seed=2)
    data = rank_data(atoms, np.arange(len(atoms)), 2 * 4.0 + 0.5, 4.0, ["Cu"])
    edge_index = torch.as_tensor(np.stack([data.pair_i, data.pair_j]).astype(np.int64))
    field = receptive_field(edge_index, data.ntotal, data.nlocal, 2)
    assert field.n_atoms[2] == len(atoms) < field.n_atoms[1] < field.n_atoms[0] <= data.ntotal
    assert field.n_edges[1] < field.n_edges[0] < data.npairs
    species = torch.zeros(data.ntotal, dtype=torch.long)
    vectors = torch.as_tensor(data.rij)
    pruned = model.local_energies(species[field.atoms], vectors[field.edges], field)
    # the same field from numpy arrays (what TFNMLIAP passes)
    again = receptive_field(np.stack([data.pair_i, data.pair_j]), data.ntotal, data.nlocal, 2)
    for name in ("atoms", "edges", "edge_index"):
        assert torch.equal(getattr(again, name), getattr(field, name))
    graph = atoms_to_graph(atoms, 4.0, torch.float64)
    full = model(graph)["energies"]
    assert torch.allclose(pruned, full, atol=1e-12, rtol=0)


def test_file_is_plain_data_and_loads_without_lammps(tmp_path, cu):
    path = tmp_path / "cu.mliap"
    export_lammps("cu-emt", path, dtype="float64")
    globals_ = [arg for op, arg, _ in pickletools.genops(path.read_bytes())
                if op.name in ("GLOBAL", "STACK_GLOBAL")]
    strings = [arg for op, arg, _ in pickletools.genops(path.read_bytes())
               if op.name in ("SHORT_BINUNICODE", "BINUNICODE")]
    # one class reference (ours); tensors travel inside the checkpoint bytes
    assert len(globals_) == 1 and "tfn_md.lammps" in strings and "TFNMLIAP" in strings
    assert not [s for s in strings if s.startswith(("torch", "numpy"))]
    atoms = rattled_cu(1)
    code = (
        "import pickle, sys, numpy as np\n"
        "assert 'lammps' not in sys.modules\n"
        f"pot = pickle.load(open({str(path)!r}, 'rb'))\n"
        "assert 'lammps' not in sys.modules\n"
        "print(pot.element_types, pot.rcutfac, pot.ndescriptors, pot.nparams, pot.dtype)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['Cu']", "2.5", "1", "1", "torch.float64"]
    with open(path, "rb") as f:
        loaded = pickle.load(f)
    assert_matches(run_ranks(loaded, atoms, 1), run_ranks(cu, atoms, 1), tol=0.0)


def test_file_exported_before_the_layout_change_loads():
    """A file tfn_md wrote before its modules moved (commit 5369118) names the class
    tfn_md.lammps.TFNMLIAP; it loads and gives what a file exported now from the same
    weights gives (cu-emt as it was then: the shipped one has been re-made since)."""
    path = Path(__file__).parent / "data" / "cu-emt-before-layout.mliap"
    strings = [arg for op, arg, _ in pickletools.genops(path.read_bytes())
               if op.name in ("SHORT_BINUNICODE", "BINUNICODE")]
    assert strings[:2] == ["tfn_md.lammps", "TFNMLIAP"]
    with open(path, "rb") as f:
        old = pickle.load(f)
    assert type(old) is TFNMLIAP
    atoms = rattled_cu(2)
    now = TFNMLIAP(old.model, dtype=old.model.e0.dtype)
    assert_matches(run_ranks(old, atoms, 2), run_ranks(now, atoms, 2), tol=0.0)


def test_bad_inputs(tmp_path, cu):
    with pytest.raises(ValueError, match="torch.load"):
        export_lammps("cu-emt", tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        TFNMLIAP(str(tmp_path / "missing.pt"))
    state = cu.__getstate__()
    state["checkpoint"] = state["checkpoint"][:100]
    with pytest.raises(ValueError, match="not a tfn_md checkpoint"):
        TFNMLIAP.__new__(TFNMLIAP).__setstate__(state)
    for key, value in (("dtype", "load"), ("device", "nowhere"), ("compile", "yes")):
        with pytest.raises((ValueError, TypeError), match=key):
            TFNMLIAP.__new__(TFNMLIAP).__setstate__({**cu.__getstate__(), key: value})
    with pytest.raises(ValueError, match="tfn_md-lammps"):
        TFNMLIAP.__new__(TFNMLIAP).__setstate__({"format": "other"})
    with pytest.raises(ValueError, match="cutoff"):
        TFNMLIAP(TFN(["H"], cutoff=None, basis="gaussian"))
    data = rank_data(rattled_cu(1), np.arange(4), 10.5, 5.0, ["Cu"])
    data.elems[:] = -1  # a LAMMPS type mapped to NULL
    with pytest.raises(ValueError, match="pair_coeff"):
        cu.compute_forces(data)


def test_cli_prints_lammps_lines(tmp_path, capsys):
    from tfn_md.cli import main

    assert main(["export-lammps", "cu-emt", "-o", str(tmp_path / "cu.mliap"),
                 "--dtype", "float64", "--skin", "1.0"]) == 0
    out = capsys.readouterr().out
    for line in ("newton on", "neighbor 1 bin", "comm_modify cutoff 11",
                 f"pair_style mliap unified {tmp_path / 'cu.mliap'} 1", "pair_coeff * * Cu"):
        assert line in out
    assert main(["export-lammps", "cu-emt", "-o", str(tmp_path / "cu.pt")]) == 1


def test_atoms_without_neighbours(cu):
    """One atom in vacuum (no pairs at all; LAMMPS may pass None arrays): E = E0(Cu)."""
    from ase import Atoms

    atoms = Atoms("Cu2", positions=[[0, 0, 0], [20, 0, 0]])
    data = rank_data(atoms, [0, 1], 10.5, 5.0, ["Cu"])
    assert data.npairs == 0
    data.pair_i = data.pair_j = data.rij = None
    cu.compute_forces(data)
    assert np.allclose(data.eatoms, reference(atoms[:1], "cu-emt")[0], atol=1e-12)
    assert data.f.shape == (2, 3) and not data.f.any()
