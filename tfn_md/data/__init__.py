"""Datasets: the HDF5 dataset file, importers and the ``tfn-md data`` commands."""

from tfn_md.data.hdf5 import (
    DatasetError,
    DatasetWriter,
    Field,
    H5Dataset,
    arrays_to_atoms,
    validate,
    write_atoms,
)

__all__ = [
    "DatasetError",
    "DatasetWriter",
    "Field",
    "H5Dataset",
    "arrays_to_atoms",
    "validate",
    "write_atoms",
]
