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


def test_xtb_sample_labels_match_fresh_tblite(tmp_path: Path) -> None:
    pytest.importorskip("tblite")
    path = tmp_path / "water.h5"
    kw = {"name": "H2O", "temperatures": [300.0, 800.0], "interval": 4, "equilibration": 2}
    kw["seed"] = 11
    assert sample_xtb(path, molecule("H2O"), n=3, **kw) == 6
    ds = H5Dataset(path)
    assert len(ds) == 6
    validate(path)
    for atoms in ds:
        fresh = _fresh_xtb(atoms)
        assert np.allclose(atoms.get_forces(), fresh.get_forces(), rtol=0, atol=1e-9)
        assert atoms.get_potential_energy() == pytest.approx(fresh.get_potential_energy(), abs=1e-9)
        assert np.allclose(atoms.calc.results["dipole"], fresh.calc.results["dipole"], atol=1e-9)
        assert atoms.arrays["momenta"].shape == (3, 3)
        assert atoms.info[MD_RUN].startswith("{")
    assert ds.fields["dipole"].shape == (3,) and ds.fields["dipole"].unit == "e*Angstrom"
    frames = _by_frame(ds)
    assert not np.allclose(frames[300.0, 0].positions, frames[300.0, 1].positions)
    # same settings, same data (up to tblite's threaded sums)
    again = tmp_path / "again.h5"
    sample_xtb(again, molecule("H2O"), n=3, **kw)
    for key, atoms in _by_frame(H5Dataset(again)).items():
        assert np.allclose(atoms.positions, frames[key].positions, rtol=0, atol=1e-9)
    # resuming: a shorter run continued equals the full run
    part = tmp_path / "part.h5"
    assert sample_xtb(part, molecule("H2O"), n=1, **kw) == 2
    assert sample_xtb(part, molecule("H2O"), n=3, **kw) == 4
    assert sample_xtb(part, molecule("H2O"), n=3, **kw) == 0
    resumed = _by_frame(H5Dataset(part))
    assert set(resumed) == set(frames)
    for key, atoms in resumed.items():
        assert np.allclose(atoms.positions, frames[key].positions, rtol=0, atol=1e-9)
        assert np.allclose(atoms.arrays["momenta"], frames[key].arrays["momenta"], atol=1e-9)
    # another seed is another trajectory
    other = tmp_path / "other.h5"
    sample_xtb(other, molecule("H2O"), n=2, **{**kw, "seed": 12})
    assert not np.allclose(
        _by_frame(H5Dataset(other))[300.0, 1].positions, frames[300.0, 1].positions
    )
