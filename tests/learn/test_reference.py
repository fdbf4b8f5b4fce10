"""The labels of ``tfn-md learn``: what the reference gives is kept, in ASE's units."""

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from tfn_md.data import H5Dataset, write_atoms
from tfn_md.learn.reference import label, reference_factory


def test_gfn2_labels_keep_the_dipole_and_charges(tmp_path):
    """GFN2-xTB (tblite) computes the dipole and the charges with the forces: the label
    keeps them (the same numbers as a direct tblite call), and they survive the dataset."""
    pytest.importorskip("tblite")
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    record = label(atoms, reference_factory("GFN2-xTB"), "GFN2-xTB")
    direct = atoms.copy()
    direct.calc = reference_factory("GFN2-xTB")("GFN2-xTB")
    assert np.allclose(record.get_dipole_moment(), direct.get_dipole_moment(), atol=1e-10)
    assert np.allclose(record.get_charges(), direct.get_charges(), atol=1e-10)
    assert abs(record.get_charges().sum()) < 1e-6  # neutral
    write_atoms(tmp_path / "l.h5", [record])
    with H5Dataset(tmp_path / "l.h5") as ds:
        stored = ds[0]
    assert np.allclose(stored.get_dipole_moment(), record.get_dipole_moment())
    assert np.allclose(stored.get_charges(), record.get_charges())


def test_labels_without_dipole_where_the_reference_has_none():
    cu = bulk("Cu", cubic=True)
    record = label(cu, lambda _m: EMT())
    assert set(record.calc.results) == {"energy", "forces", "stress"}
