"""Importers: ASE files with named labels, QM9 from qm9pack, GFN2-xTB sampling."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import units
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

from tfn_md.data import H5Dataset, validate, write_atoms
from tfn_md.data.sources import (
    MD_FRAME,
    MD_RUN,
    MD_TEMPERATURE,
    attach_results,
    qm9_atoms,
    read_ase,
    sample_xtb,
)

# ---------------------------------------------------------------- ASE files


def _labelled_frames() -> list:
    rng = np.random.default_rng(5)
    frames = []
    for k, atoms in enumerate([molecule("H2O"), bulk("Si", cubic=True), molecule("NH3")]):
        atoms.info["REF_energy"] = -10.0 - k
        atoms.new_array("REF_forces", rng.normal(size=(len(atoms), 3)))
        if atoms.pbc.all():
            stress = rng.normal(size=(3, 3))
            atoms.info["REF_stress"] = stress + stress.T
        frames.append(atoms)
    del frames[2].info["REF_energy"]  # a structure without an energy label
    return frames


def test_read_ase_named_keys(tmp_path: Path) -> None:
    path = tmp_path / "mace-style.extxyz"
    ase.io.write(path, _labelled_frames())
    frames = ase.io.read(path, index=":")  # as the text file holds them
    got = list(
        read_ase(path, energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress")
    )
    assert len(got) == 3
    assert got[0].get_potential_energy() == -10.0
    assert np.array_equal(got[0].get_forces(), frames[0].arrays["REF_forces"])
    full = frames[1].info["REF_stress"]
    assert np.allclose(got[1].get_stress(), full[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]])
    assert "REF_energy" not in got[0].info and "REF_forces" not in got[0].arrays
    assert "energy" not in got[2].calc.results  # missing label stays missing
    out = tmp_path / "out.h5"
    write_atoms(out, got)
    ds = H5Dataset(out)
    assert ds.mask("energy").tolist() == [True, True, False]
    assert ds.mask("stress").tolist() == [False, True, False]
    assert np.array_equal(ds[1].get_stress(), got[1].get_stress())


@pytest.mark.parametrize("suffix", ["traj", "db", "extxyz"])
def test_read_ase_calculator_results(tmp_path: Path, suffix: str) -> None:
    atoms = molecule("CH4")
    forces = np.arange(15.0).reshape(5, 3)
    atoms.calc = SinglePointCalculator(atoms, energy=-24.5, forces=forces)
    path = tmp_path / f"frames.{suffix}"
    ase.io.write(path, [atoms, atoms])
    got = list(read_ase(path))
    assert len(got) == 2
    assert got[1].get_potential_energy() == -24.5
    assert np.array_equal(got[1].get_forces(), forces)


def test_attach_results_drops_non_ase_results() -> None:
    atoms = molecule("H2O")
    atoms.calc = SinglePointCalculator(atoms, energy=1.0)
    atoms.calc.results["bond-orders"] = np.zeros((3, 3))
    attach_results(atoms)
    assert set(atoms.calc.results) == {"energy"}


# ---------------------------------------------------------------- QM9


def test_qm9_methane_and_order(tmp_path: Path) -> None:
    first = qm9_atoms(limit=5)
    assert [a.info["qm9_index"] for a in first] == [1, 2, 3, 4, 5]
    methane = first[0]
    assert len(methane) == 5
    assert methane.get_chemical_formula() == "CH4"
    assert sorted(methane.get_chemical_symbols()) == ["C", "H", "H", "H", "H"]
    energy = methane.get_potential_energy()
    assert energy == pytest.approx(-40.47893 * units.Hartree, rel=1e-12)  # U0, eV
    assert -1110 < energy < -1090
    assert methane.info["smiles"] == "C"
    # C-H bonds of about 1.09 Angstrom: the coordinates are in Angstrom
    assert np.allclose(methane.get_distances(0, [1, 2, 3, 4]), 1.09, atol=0.01)
    tensor = methane.info["polarizability_tensor"]
    assert np.allclose(tensor, tensor.T)
    assert np.trace(tensor) / 3 == pytest.approx(methane.info["polarizability"], rel=1e-3)
    assert methane.arrays["mulliken_charges"].sum() == pytest.approx(0.0, abs=1e-5)


def test_qm9_filters(tmp_path: Path) -> None:
    small = qm9_atoms(max_atoms=4, limit=4)
    assert all(len(a) <= 4 for a in small) and len(small) == 4
    triatomic = qm9_atoms(n_atoms=3, limit=2)
    assert [a.get_chemical_formula() for a in triatomic] == ["H2O", "CHN"]
    picked = qm9_atoms(indices=[7, 3])
    assert [a.info["qm9_index"] for a in picked] == [3, 7]
    assert [a.info["qm9_index"] for a in qm9_atoms(limit=3, skip_indices={1, 2})] == [3, 4, 5]
    path = tmp_path / "qm9.h5"
    write_atoms(path, small)
    ds = H5Dataset(path)
    assert ds.column("qm9_index").tolist() == [a.info["qm9_index"] for a in small]
    assert ds[0].info["smiles"] == small[0].info["smiles"]
    assert ds[0].get_potential_energy() == small[0].get_potential_energy()
    validate(path)


# ---------------------------------------------------------------- xTB sampling


def _fresh_xtb(atoms):
    from tblite.ase import TBLite

    atoms = atoms.copy()
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    return atoms


def _by_frame(ds: H5Dataset) -> dict:
    return {(a.info[MD_TEMPERATURE], a.info[MD_FRAME]): a for a in ds}


SAMPLE_RUNS = """
import json, sys
from pathlib import Path
from ase.build import molecule
from tfn_md.data.sources import sample_xtb

tmp = Path(sys.argv[1])
kw = {"name": "H2O", "temperatures": [300.0, 800.0], "interval": 4, "equilibration": 2, "seed": 11}
water = molecule("H2O")
counts = [
    sample_xtb(tmp / "water.h5", water, n=3, **kw),
    sample_xtb(tmp / "again.h5", water, n=3, **kw),
    sample_xtb(tmp / "part.h5", water, n=1, **kw),
    sample_xtb(tmp / "part.h5", water, n=3, **kw),
    sample_xtb(tmp / "part.h5", water, n=3, **kw),
    sample_xtb(tmp / "other.h5", water, n=2, **{**kw, "seed": 12}),
]
print(json.dumps(counts))
"""


def _run_child(script: str, *args: object) -> str:
    """Run a script in a child process with single-threaded tblite (bitwise reproducible,
    and not slowed down by OpenMP threads competing for a busy machine)."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _assert_same_frames(a: H5Dataset, b: H5Dataset) -> None:
    fa, fb = _by_frame(a), _by_frame(b)
    assert set(fa) == set(fb)
    for key, x in fa.items():
        y = fb[key]
        assert np.array_equal(x.positions, y.positions), key
        assert np.array_equal(x.arrays["momenta"], y.arrays["momenta"]), key
        assert np.array_equal(x.get_forces(), y.get_forces()), key


def test_xtb_sample_labels_seeds_and_resume(tmp_path: Path) -> None:
    pytest.importorskip("tblite")
    import json

    counts = json.loads(_run_child(SAMPLE_RUNS, tmp_path))
    assert counts == [6, 6, 2, 4, 0, 4]  # n per temperature; resumed; nothing left to do
    path = tmp_path / "water.h5"
    ds = H5Dataset(path)
    validate(path)
    # labels: what a fresh tblite calculation at the stored geometry gives
    for atoms in ds:
        fresh = _fresh_xtb(atoms)
        assert np.allclose(atoms.get_forces(), fresh.get_forces(), rtol=0, atol=1e-9)
        assert atoms.get_potential_energy() == pytest.approx(fresh.get_potential_energy(), abs=1e-9)
        assert np.allclose(atoms.calc.results["dipole"], fresh.calc.results["dipole"], atol=1e-9)
        assert atoms.arrays["momenta"].shape == (3, 3)
        assert json.loads(atoms.info[MD_RUN])["seed"] == 11
    assert ds.fields["dipole"].shape == (3,) and ds.fields["dipole"].unit == "e*Angstrom"
    assert ds.fields[MD_TEMPERATURE].unit == "K"
    frames = _by_frame(ds)
    assert sorted(frames) == [(t, j) for t in (300.0, 800.0) for j in range(3)]
    assert not np.allclose(frames[300.0, 0].positions, frames[300.0, 1].positions)
    # the same seed gives the same data; a run continued later equals an uninterrupted one
    _assert_same_frames(ds, H5Dataset(tmp_path / "again.h5"))
    _assert_same_frames(ds, H5Dataset(tmp_path / "part.h5"))
    # another seed is another trajectory
    other = _by_frame(H5Dataset(tmp_path / "other.h5"))
    assert not np.allclose(other[300.0, 1].positions, frames[300.0, 1].positions)


SAMPLER_SCRIPT = """
import sys
from ase.build import molecule
from tfn_md.data.sources import sample_xtb

def report(k):
    if k:
        print(k, flush=True)

sample_xtb(sys.argv[1], molecule("H2O"), name="H2O", temperatures=[500.0], n=int(sys.argv[2]),
           interval=2, equilibration=0, seed=4, progress=report)
"""


def _sampler(path: Path, n: int):
    """The sampler in a child process, single-threaded so runs are bitwise reproducible."""
    import os
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", SAMPLER_SCRIPT, str(path), str(n)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_killed_sampling_resumes_bitwise(tmp_path: Path) -> None:
    """SIGKILL a sampler mid-run; re-running continues it exactly as if never killed."""
    pytest.importorskip("tblite")
    import signal

    path = tmp_path / "killed.h5"
    proc = _sampler(path, 10**6)
    try:
        for _ in range(15):
            assert proc.stdout.readline(), "sampler died"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    with H5Dataset(path) as ds:
        kept = len(ds)
    assert kept >= 15
    n = kept + 3
    reference = tmp_path / "reference.h5"
    for out in (path, reference):
        proc = _sampler(out, n)
        proc.communicate()
        assert proc.returncode == 0
    resumed, uninterrupted = H5Dataset(path), H5Dataset(reference)
    assert [a.info[MD_FRAME] for a in resumed] == list(range(n))
    for a, b in zip(resumed, uninterrupted, strict=True):
        assert np.array_equal(a.positions, b.positions)
        assert np.array_equal(a.arrays["momenta"], b.arrays["momenta"])
        assert np.array_equal(a.get_forces(), b.get_forces())
        assert a.get_potential_energy() == b.get_potential_energy()


def test_sampler_bookkeeping_with_a_cheap_calculator(tmp_path: Path) -> None:
    """Resume, duplicate temperatures and name clashes, with EMT standing in for xTB."""
    from ase.calculators.emt import EMT

    path = tmp_path / "emt.h5"
    kw = {"name": "H2O", "interval": 3, "equilibration": 1, "calculator": lambda method: EMT()}
    water = molecule("H2O")
    assert sample_xtb(path, water, temperatures=[300, 300.0, 600], n=3, **kw) == 6
    assert sample_xtb(path, water, temperatures=[300, 600], n=3, **kw) == 0
    assert sample_xtb(path, water, temperatures=[600, 900], n=4, **kw) == 5
    ds = H5Dataset(path)
    frames = sorted((a.info[MD_TEMPERATURE], a.info[MD_FRAME]) for a in ds)
    assert frames == [(300.0, j) for j in range(3)] + [(600.0, j) for j in range(4)] + [
        (900.0, j) for j in range(4)
    ]
    ds.close()  # a writer in this process needs the file closed by readers
    with pytest.raises(ValueError, match="other atoms"):
        sample_xtb(path, molecule("NH3"), temperatures=[300], n=5, **kw)
    # another seed is another run in the same file
    assert sample_xtb(path, water, temperatures=[300], n=2, **{**kw, "seed": 1}) == 2
    assert len(H5Dataset(path)) == 13
