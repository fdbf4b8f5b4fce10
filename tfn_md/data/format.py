"""The dataset file format: names, fields, value types, opening and layout checks.

Structures are stored as ragged arrays concatenated over atoms, with one row
per structure holding its atom count and the offset of its first atom (not one
group per structure). With ``S`` committed structures and ``A`` atoms in all::

    /n_structures          int64 [1]        committed count, written last
    /structures/n_atoms    int64 [S]
    /structures/offset     int64 [S]        first atom row of each structure
    /structures/cell       float64 [S, 3, 3] Angstrom
    /structures/pbc        bool [S, 3]
    /structures/<name>     [S, ...]         energy [S] eV, stress [S, 6] eV/A^3, info extras
    /atoms/numbers         int64 [A]
    /atoms/positions       float64 [A, 3]   Angstrom
    /atoms/<name>          [A, ...]         forces [A, 3] eV/A, arrays extras
    /masks/<name>          bool [S]         True where structure s has property <name>

Missing values are NaN (floats), 0 (integers), False or "" and the mask is
False. Readers trust only ``/n_structures``: rows past it are ignored. Every
dataset carries a Fletcher-32 checksum per chunk (HDF5's ``fletcher32``
filter), verified on every read of a file no writer holds open.
``docs/dataset-format.md`` is the full reference, including the crash-safety
design (SWMR writes, flush, then the committed count, then flush).

Readers: :mod:`tfn_md.data.reader`; writers: :mod:`tfn_md.data.writer`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import h5py
import numpy as np
from ase.outputs import all_outputs

from tfn_md.keys import (
    CELL,
    DIPOLE,
    ENERGIES,
    ENERGY,
    FORCES,
    FREE_ENERGY,
    NUMBERS,
    PBC,
    POSITIONS,
    STRESS,
)

PathLike = str | os.PathLike

FORMAT_NAME: Final[str] = "tfn_md.dataset"
FORMAT_VERSION: Final[int] = 1
ENERGY_UNIT: Final[str] = "eV"
LENGTH_UNIT: Final[str] = "Angstrom"

N_STRUCTURES: Final[str] = "n_structures"
STRUCTURES: Final[str] = "structures"
ATOMS: Final[str] = "atoms"
MASKS: Final[str] = "masks"
N_ATOMS: Final[str] = "n_atoms"
OFFSET: Final[str] = "offset"

ORIGIN_CORE: Final[str] = "core"
ORIGIN_CALC: Final[str] = "calc"  # atoms.calc.results, restored as a SinglePointCalculator
ORIGIN_INFO: Final[str] = "info"  # atoms.info
ORIGIN_ARRAYS: Final[str] = "arrays"  # atoms.arrays
_ORIGINS = (ORIGIN_CORE, ORIGIN_CALC, ORIGIN_INFO, ORIGIN_ARRAYS)

#: Units recorded for well-known property names (ASE's units).
DEFAULT_UNITS: Final[Mapping[str, str]] = {
    ENERGY: "eV",
    FREE_ENERGY: "eV",
    ENERGIES: "eV",
    FORCES: "eV/Angstrom",
    STRESS: "eV/Angstrom^3",
    "stresses": "eV/Angstrom^3",
    DIPOLE: "e*Angstrom",
    "charges": "e",
    "initial_charges": "e",
    "magmom": "mu_B",
    "magmoms": "mu_B",
    "initial_magmoms": "mu_B",
    "momenta": "sqrt(amu*eV)",
    "masses": "amu",
}

_LIBVER = ("v110", "v110")  # SWMR needs >= 1.10 objects; readable by HDF5 >= 1.10
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CHUNK_BYTES = 32768
_COPY_ROWS = 1 << 16


class DatasetError(ValueError):
    """A dataset file is missing pieces, inconsistent, or not a dataset file."""


@dataclass(frozen=True)
class Field:
    """One array of the file.

    ``per_atom`` arrays have ``A`` rows (one per atom), the others ``S`` rows
    (one per structure); ``shape`` is the trailing shape of one row, e.g.
    ``(3,)`` for forces, ``(3, 3)`` for a per-structure tensor. Strings are
    fixed-width UTF-8 bytes (dtype ``S<n>``), read back as ``str``.
    """

    name: str
    per_atom: bool
    origin: str
    dtype: np.dtype
    shape: tuple[int, ...] = ()
    unit: str = ""
    python_scalar: bool = False  # 0-d values read back as int/float/bool, not numpy

    @property
    def path(self) -> str:
        return f"{ATOMS if self.per_atom else STRUCTURES}/{self.name}"

    @property
    def optional(self) -> bool:
        return self.origin != ORIGIN_CORE


_I8, _F8, _B1 = np.dtype(np.int64), np.dtype(np.float64), np.dtype(bool)
CORE_FIELDS: Final[tuple[Field, ...]] = (
    Field(N_ATOMS, False, ORIGIN_CORE, _I8),
    Field(OFFSET, False, ORIGIN_CORE, _I8),
    Field(CELL, False, ORIGIN_CORE, _F8, (3, 3), LENGTH_UNIT),
    Field(PBC, False, ORIGIN_CORE, _B1, (3,)),
    Field(NUMBERS, True, ORIGIN_CORE, _I8),
    Field(POSITIONS, True, ORIGIN_CORE, _F8, (3,), LENGTH_UNIT),
)
_CORE = {f.name: f for f in CORE_FIELDS}
_CORE_FILL = {N_ATOMS: -1, OFFSET: -1}  # rows never written read as invalid


# ---------------------------------------------------------------- values


def _fill_value(dtype: np.dtype) -> Any:
    """The missing-value fill: NaN for floats, 0 / False / b"" otherwise."""
    return np.nan if dtype.kind in "fc" else np.zeros((), dtype)[()]


def _as_value(value: Any) -> np.ndarray | None:
    """A numeric/bool array or 0-d UTF-8 byte string, or None if unsupported."""
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return np.array(raw, dtype=f"S{max(1, len(raw))}")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        return None
    if arr.dtype.kind in "biufc":
        return arr
    if arr.dtype.kind == "U" and arr.ndim == 0:
        return _as_value(str(arr))
    return None


def _string_width(n: int) -> int:
    return max(16, -(-n // 16) * 16)


def _infer_field(
    name: str, origin: str, raw: Any, value: np.ndarray, per_atom: bool, unit: str
) -> Field:
    shape = value.shape[1:] if per_atom else value.shape
    dtype = value.dtype
    if dtype.kind == "S":
        dtype = np.dtype(f"S{_string_width(dtype.itemsize)}")
    python = type(raw) in (bool, int, float, complex)
    return Field(name, per_atom, origin, dtype, tuple(shape), unit, python)


def _merge_field(old: Field, new: Field) -> Field:
    """The field able to hold both; raises ValueError if none can."""
    if (old.per_atom, old.origin, old.shape) != (new.per_atom, new.origin, new.shape):
        raise ValueError(
            f"property {new.name!r}: {new.origin} {'per-atom' if new.per_atom else 'per-structure'}"
            f" shape {new.shape} does not match the file's {old.origin}"
            f" {'per-atom' if old.per_atom else 'per-structure'} shape {old.shape}"
        )
    if (old.dtype.kind == "S") != (new.dtype.kind == "S"):
        raise ValueError(f"property {new.name!r}: cannot mix strings and numbers")
    if old.dtype.kind == "S":
        if new.dtype.itemsize <= old.dtype.itemsize:
            return old
        width = max(new.dtype.itemsize, 2 * old.dtype.itemsize)
        return replace(old, dtype=np.dtype(f"S{_string_width(width)}"))
    if np.can_cast(new.dtype, old.dtype, casting="safe"):
        return old
    return replace(old, dtype=np.result_type(old.dtype, new.dtype))


# ---------------------------------------------------------------- opening and checks


_WRITING = 0x01 | 0x04  # superblock status flags: open for write, open for SWMR write


def _superblock(path: Path) -> tuple[int, int] | None:
    """(status flags, stored end-of-file address) of a v2/v3 superblock, else None."""
    with open(path, "rb") as fh:
        head = fh.read(36)
    if len(head) < 36 or head[8] not in (2, 3) or head[9] != 8:
        return None
    return head[11], struct.unpack_from("<Q", head, 28)[0]


def being_written(path: PathLike) -> bool:
    """True if the superblock says a writer holds the file open (running, or killed)."""
    superblock = _superblock(Path(path))
    return superblock is not None and bool(superblock[0] & _WRITING)


def open_h5(path: PathLike) -> h5py.File:
    """Open an HDF5 file read-only, mapping every failure to ``DatasetError``.

    A file whose superblock says a writer has it open (running, or killed)
    is opened in SWMR read mode, which sees a consistent file at any instant;
    its stored end of file may then exceed the file's size (space allocated
    in a flush that has not finished). Other files must not be shorter than
    their superblock says.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dataset file")
    with open(path, "rb") as fh:
        if fh.read(8) != _HDF5_SIGNATURE:
            raise DatasetError(f"{path}: not an HDF5 file (no HDF5 signature at the start)")
    superblock, size = _superblock(path), path.stat().st_size
    if superblock is not None and superblock[0] & _WRITING:
        try:
            return h5py.File(path, "r", swmr=True, locking=False)
        except OSError as err:
            raise DatasetError(f"{path}: corrupt HDF5 file, cannot be opened ({err})") from err
    if superblock is not None and superblock[1] > size:
        raise DatasetError(
            f"{path}: truncated file ({size} bytes, the superblock says {superblock[1]})"
        )
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as err:
        message = str(err)
    if "truncated" in message:
        raise DatasetError(f"{path}: truncated HDF5 file ({message})")
    raise DatasetError(f"{path}: corrupt HDF5 file, cannot be opened ({message})")


@dataclass(frozen=True)
class Layout:
    """What a dataset file holds: its fields and committed sizes."""

    fields: dict[str, Field]  # core first, then optional properties
    n_structures: int
    n_atoms_total: int
    attrs: dict[str, Any]
    checksums: bool = False  # every array carries Fletcher-32 chunk checksums


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_layout(f: h5py.File, path: PathLike) -> Layout:
    """Check the file's structure (metadata and two index rows; no arrays read).

    Raises ``DatasetError`` naming the file: wrong format marker, future
    version, wrong units, missing required dataset, bad shapes, lengths
    shorter than the committed count, offsets that do not start at 0.
    """
    attrs = {k: f.attrs[k] for k in f.attrs}
    marker = attrs.get("format")
    if marker is None or _attr_str(marker) != FORMAT_NAME:
        found = "missing" if marker is None else repr(_attr_str(marker))
        raise DatasetError(
            f"{path}: not a tfn_md dataset (root attribute 'format' is {found},"
            f" expected {FORMAT_NAME!r})"
        )
    version = attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or version < 1:
        raise DatasetError(f"{path}: invalid root attribute 'format_version' {version!r}")
    if version > FORMAT_VERSION:
        raise DatasetError(
            f"{path}: written in dataset format version {version}, newer than the version"
            f" {FORMAT_VERSION} this tfn_md reads; upgrade tfn_md"
        )
    for key, unit in (("energy_unit", ENERGY_UNIT), ("length_unit", LENGTH_UNIT)):
        if _attr_str(attrs.get(key, "")) != unit:
            raise DatasetError(
                f"{path}: root attribute {key!r} is {attrs.get(key)!r}, not {unit!r}"
            )
    for name in (N_STRUCTURES, STRUCTURES, ATOMS, MASKS):
        if name not in f:
            raise DatasetError(f"{path}: missing required {'/' + name!r}")
    count = f[N_STRUCTURES]
    if not isinstance(count, h5py.Dataset) or count.shape != (1,) or count.dtype.kind not in "iu":
        raise DatasetError(f"{path}: '/{N_STRUCTURES}' must be an integer dataset of shape (1,)")
    n = int(count[0])
    if n < 0:
        raise DatasetError(f"{path}: negative structure count {n}")

    fields: dict[str, Field] = {}
    for per_atom, group in ((False, STRUCTURES), (True, ATOMS)):
        for name, ds in f[group].items():
            if not isinstance(ds, h5py.Dataset) or ds.ndim < 1:
                raise DatasetError(f"{path}: '/{group}/{name}' is not an array dataset")
            origin = _attr_str(ds.attrs.get("origin", ""))
            if origin not in _ORIGINS or (origin == ORIGIN_CORE) != (name in _CORE):
                raise DatasetError(f"{path}: '/{group}/{name}' has invalid origin {origin!r}")
            if name in fields:
                raise DatasetError(f"{path}: property {name!r} is both per-structure and per-atom")
            unit = _attr_str(ds.attrs.get("unit", ""))
            python = bool(ds.attrs.get("python_scalar", False))
            fields[name] = Field(name, per_atom, origin, ds.dtype, ds.shape[1:], unit, python)
    for core in CORE_FIELDS:
        got = fields.get(core.name)
        if got is None or got.per_atom != core.per_atom:
            raise DatasetError(f"{path}: missing required dataset '/{core.path}'")
        if got.shape != core.shape or got.dtype.kind != core.dtype.kind:
            raise DatasetError(
                f"{path}: '/{core.path}' has rows {got.shape} of {got.dtype},"
                f" expected {core.shape} of {core.dtype}"
            )
    for name, field in fields.items():
        if field.optional:
            mask = f[MASKS].get(name)
            if not isinstance(mask, h5py.Dataset) or mask.ndim != 1:
                raise DatasetError(f"{path}: missing mask dataset '/{MASKS}/{name}'")
            if mask.shape[0] < n:
                raise DatasetError(
                    f"{path}: '/{MASKS}/{name}' has {mask.shape[0]} rows, {n} structures committed"
                )
        if not field.per_atom and f[field.path].shape[0] < n:
            raise DatasetError(
                f"{path}: '/{field.path}' has {f[field.path].shape[0]} rows"
                f" but {n} structures are committed (inconsistent lengths)"
            )
    total = 0
    if n > 0:
        live = being_written(path)  # a chunk being rewritten may fail its checksum

        def row(name: str, k: int) -> int:
            return int(read_rows(f[STRUCTURES][name], k, k + 1, tolerant=live)[0])

        first, last, count_last = row(OFFSET, 0), row(OFFSET, n - 1), row(N_ATOMS, n - 1)
        if first != 0 or last < 0 or count_last < 0:
            raise DatasetError(f"{path}: inconsistent offsets (first {first}, last {last})")
        total = last + count_last
    for field in fields.values():
        if field.per_atom and f[field.path].shape[0] < total:
            raise DatasetError(
                f"{path}: '/{field.path}' has {f[field.path].shape[0]} rows but the offsets"
                f" need {total} atoms (inconsistent lengths)"
            )
    for field in fields.values():
        check_label_field(field, path)
    ordered = {c.name: fields[c.name] for c in CORE_FIELDS}
    ordered.update({k: v for k, v in fields.items() if k not in ordered})
    checked = [f[fl.path] for fl in fields.values()]
    checked += [f[f"{MASKS}/{name}"] for name, fl in fields.items() if fl.optional]
    checksums = all(ds.fletcher32 for ds in checked)
    return Layout(ordered, n, total, attrs, checksums)


def label_spec(name: str) -> tuple[bool, tuple[int, ...]] | None:
    """(per_atom, trailing shape) ASE fixes for a result name (energy, forces, stress,
    dipole, charges, ...), or None for other names."""
    spec = all_outputs[name].shapespec if name in all_outputs else None
    if spec is None:
        return None
    per_atom = bool(spec) and spec[0] == "natoms"
    rest = tuple(spec[per_atom:])
    if any(isinstance(x, str) for x in rest):
        return None  # bands, k-points, ...: never stored
    return per_atom, rest


def check_label_field(field: Field, path: PathLike) -> None:
    """A property named like an ASE result must have that result's rows and a real
    numeric dtype (what the loader, the trainer and ``info`` rely on)."""
    spec = label_spec(field.name)
    if spec is None or not field.optional:
        return
    per_atom, shape = spec
    where = "per-atom" if per_atom else "per-structure"
    found = "per-atom" if field.per_atom else "per-structure"
    if field.per_atom != per_atom or field.shape != shape or field.dtype.kind not in "iuf":
        kind = "strings" if field.dtype.kind == "S" else str(field.dtype)
        raise DatasetError(
            f"{path}: '/{field.path}' is {found} rows of shape {field.shape} and dtype {kind};"
            f" {field.name!r} must be {where} rows of shape {shape} of real numbers"
        )


def read_rows(ds: h5py.Dataset, start: int, stop: int, tolerant: bool = False) -> np.ndarray:
    """Rows ``start:stop`` of a dataset chunked along its first axis.

    ``tolerant``: a chunk that fails its checksum is read raw, without the
    check. For files a writer holds open (or a killed writer left): a chunk
    being rewritten holds committed rows whose bytes never change beside
    uncommitted ones, so only its checksum is out of date.
    """
    try:
        return ds[start:stop]
    except OSError:
        if not (tolerant and ds.fletcher32):
            raise
    rows, tail = ds.chunks[0], ds.shape[1:]
    out = np.empty((stop - start, *tail), ds.dtype)
    for first in range(start - start % rows, stop, rows):
        coord = (first,) + (0,) * len(tail)
        if ds.id.get_chunk_info_by_coord(coord).byte_offset is None:
            chunk = np.full((rows, *tail), ds.fillvalue, ds.dtype)
        else:
            filters, raw = ds.id.read_direct_chunk(coord)
            body = raw if filters & 1 else raw[:-4]  # Fletcher-32 appends 4 bytes
            chunk = np.frombuffer(body, ds.dtype).reshape(rows, *tail)
        lo, hi = max(start, first), min(stop, first + rows)
        out[lo - start : hi - start] = chunk[lo - first : hi - first]
    return out

