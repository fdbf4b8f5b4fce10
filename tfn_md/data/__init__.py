"""Datasets: the HDF5 dataset file, importers and the ``tfn-md data`` commands.

Layout and guarantees of the file: ``docs/dataset-format.md``.
"""

from tfn_md.data.format import DatasetError, Field, Layout
from tfn_md.data.reader import H5Dataset, arrays_to_atoms, validate
from tfn_md.data.sources import (
    attach_results,
    iter_qm9,
    molecule_or_file,
    qm9_atoms,
    qm9_files,
    read_ase,
    sample_xtb,
    xtb_calculator,
)
from tfn_md.data.writer import DatasetWriter, write_atoms

__all__ = [
    "DatasetError",
    "DatasetWriter",
    "Field",
    "H5Dataset",
    "Layout",
    "arrays_to_atoms",
    "attach_results",
    "iter_qm9",
    "molecule_or_file",
    "qm9_atoms",
    "qm9_files",
    "read_ase",
    "sample_xtb",
    "validate",
    "write_atoms",
    "xtb_calculator",
]
