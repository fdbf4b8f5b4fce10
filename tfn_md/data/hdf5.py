"""The dataset file (compatibility module): the names of :mod:`tfn_md.data.format`,
:mod:`tfn_md.data.reader` and :mod:`tfn_md.data.writer` under their former home.

New code imports from those modules (or from :mod:`tfn_md.data`).
"""

from tfn_md.data.format import (
    ATOMS,
    CORE_FIELDS,
    DEFAULT_UNITS,
    ENERGY_UNIT,
    FORMAT_NAME,
    FORMAT_VERSION,
    LENGTH_UNIT,
    MASKS,
    N_ATOMS,
    N_STRUCTURES,
    OFFSET,
    ORIGIN_ARRAYS,
    ORIGIN_CALC,
    ORIGIN_CORE,
    ORIGIN_INFO,
    STRUCTURES,
    DatasetError,
    Field,
    Layout,
    PathLike,
    open_h5,
    read_layout,
)
from tfn_md.data.reader import H5Dataset, arrays_to_atoms, validate
from tfn_md.data.writer import DatasetWriter, write_atoms

__all__ = [
    "ATOMS",
    "CORE_FIELDS",
    "DEFAULT_UNITS",
    "ENERGY_UNIT",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LENGTH_UNIT",
    "MASKS",
    "N_ATOMS",
    "N_STRUCTURES",
    "OFFSET",
    "ORIGIN_ARRAYS",
    "ORIGIN_CALC",
    "ORIGIN_CORE",
    "ORIGIN_INFO",
    "STRUCTURES",
    "DatasetError",
    "DatasetWriter",
    "Field",
    "H5Dataset",
    "Layout",
    "PathLike",
    "arrays_to_atoms",
    "open_h5",
    "read_layout",
    "validate",
    "write_atoms",
]
