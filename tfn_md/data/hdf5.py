"""The dataset file: many structures of any size in one HDF5 file.

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
False. Readers trust only ``/n_structures``: rows past it are ignored.
``docs/dataset-format.md`` is the full reference, including the crash-safety
design (SWMR writes, flush, then the committed count, then flush).
"""

from __future__ import annotations

import contextlib
import os
import struct
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Self, overload

import h5py
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.outputs import all_outputs
from ase.stress import full_3x3_to_voigt_6_stress

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

try:  # advisory lock against two writers; absent on Windows
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

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


@dataclass
class _Record:
    """One structure ready to write: core arrays and optional properties."""

    numbers: np.ndarray  # [n] int64
    positions: np.ndarray  # [n, 3] float64
    cell: np.ndarray  # [3, 3] float64
    pbc: np.ndarray  # [3] bool
    values: dict[str, np.ndarray]  # name -> [...] or [n, ...]
    fields: dict[str, Field]  # name -> field inferred from this structure


def _calc_results(atoms: Atoms) -> dict[str, Any]:
    calc = atoms.calc
    if calc is None or not getattr(calc, "results", None):
        return {}
    try:
        stale = calc.check_state(atoms)
    except (AttributeError, NotImplementedError, TypeError):  # no state checks
        stale = []
    if stale:
        warnings.warn(
            f"calculator results ignored: atoms changed since the calculation ({stale})",
            stacklevel=4,
        )
        return {}
    return dict(calc.results)


def _record_from_atoms(
    atoms: Atoms,
    info_keys: Sequence[str] | None,
    array_keys: Sequence[str] | None,
    units: Mapping[str, str],
) -> _Record:
    n = len(atoms)
    values: dict[str, np.ndarray] = {}
    fields: dict[str, Field] = {}
    origin_of: dict[str, str] = {}

    def add(name: str, origin: str, raw: Any, value: np.ndarray, per_atom: bool) -> None:
        if name in _CORE or "/" in name or not name or name in (".", ".."):
            raise ValueError(f"{origin} key {name!r} is not a usable property name")
        if name in values:
            raise ValueError(f"property {name!r} appears in both {origin_of[name]} and {origin}")
        if per_atom and (value.ndim == 0 or value.shape[0] != n):
            raise ValueError(f"{origin} {name!r} has shape {value.shape}, expected ({n}, ...)")
        unit = units.get(name, DEFAULT_UNITS.get(name, ""))
        values[name], origin_of[name] = value, origin
        fields[name] = _infer_field(name, origin, raw, value, per_atom, unit)

    for name, result in _calc_results(atoms).items():
        spec = all_outputs[name].shapespec if name in all_outputs else None
        per_atom = bool(spec) and spec[0] == "natoms"
        if spec is None or any(isinstance(s, str) for s in spec[per_atom:]) or result is None:
            continue  # not an ASE per-structure/per-atom output (bands, k-points, ...)
        value = np.asarray(result)
        if name == STRESS and value.shape == (3, 3):
            value = full_3x3_to_voigt_6_stress(value)
        expected = ((n,) if per_atom else ()) + tuple(spec[per_atom:])
        if value.shape != expected or value.dtype.kind not in "biufc":
            raise ValueError(
                f"calculator result {name!r} has shape {value.shape}, expected {expected}"
            )
        add(name, ORIGIN_CALC, result, value, per_atom)

    for name in atoms.info if info_keys is None else info_keys:
        if name not in atoms.info:
            continue
        value = _as_value(atoms.info[name])
        if value is None:
            if info_keys is not None:
                raise ValueError(f"info {name!r}: unsupported value {atoms.info[name]!r}")
            warnings.warn(f"info {name!r} skipped: not a number, string or array", stacklevel=4)
            continue
        add(name, ORIGIN_INFO, atoms.info[name], value, False)

    for name in atoms.arrays if array_keys is None else array_keys:
        if name in (NUMBERS, POSITIONS) or name not in atoms.arrays:
            continue
        value = _as_value(atoms.arrays[name])
        if value is None or value.dtype.kind == "S":
            if array_keys is not None:
                raise ValueError(f"arrays {name!r}: only numeric per-atom arrays are supported")
            warnings.warn(f"arrays {name!r} skipped: not numeric", stacklevel=4)
            continue
        add(name, ORIGIN_ARRAYS, None, value, True)

    return _Record(
        numbers=np.asarray(atoms.numbers, dtype=np.int64),
        positions=np.asarray(atoms.positions, dtype=np.float64),
        cell=np.asarray(atoms.cell.array, dtype=np.float64),
        pbc=np.asarray(atoms.pbc, dtype=bool),
        values=values,
        fields=fields,
    )


def _to_python(value: np.ndarray, python_scalar: bool) -> Any:
    """Strings as ``str``; 0-d numbers as Python or numpy scalars, as written."""
    if value.dtype.kind == "S":
        return bytes(value[()]).decode("utf-8")
    if value.ndim == 0:
        return value.item() if python_scalar else value[()]
    return value


def arrays_to_atoms(arrays: Mapping[str, np.ndarray], fields: Mapping[str, Field]) -> Atoms:
    """Build ``ase.Atoms`` from one structure's arrays (see ``H5Dataset.get_arrays``).

    Properties of origin ``calc`` go to a ``SinglePointCalculator``, ``info``
    to ``atoms.info``, ``arrays`` to ``atoms.arrays``.
    """
    atoms = Atoms(
        numbers=arrays[NUMBERS], positions=arrays[POSITIONS], cell=arrays[CELL], pbc=arrays[PBC]
    )
    results = {}
    for name, field in fields.items():
        if not field.optional or name not in arrays:
            continue
        value = arrays[name]
        if field.origin == ORIGIN_CALC:
            results[name] = _to_python(value, field.python_scalar)
        elif field.origin == ORIGIN_INFO:
            atoms.info[name] = _to_python(value, field.python_scalar)
        else:
            atoms.new_array(name, value)
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


# ---------------------------------------------------------------- opening and checks


_WRITING = 0x01 | 0x04  # superblock status flags: open for write, open for SWMR write


def _superblock(path: Path) -> tuple[int, int] | None:
    """(status flags, stored end-of-file address) of a v2/v3 superblock, else None."""
    with open(path, "rb") as fh:
        head = fh.read(36)
    if len(head) < 36 or head[8] not in (2, 3) or head[9] != 8:
        return None
    return head[11], struct.unpack_from("<Q", head, 28)[0]


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
        first, last = int(f[STRUCTURES][OFFSET][0]), int(f[STRUCTURES][OFFSET][n - 1])
        count_last = int(f[STRUCTURES][N_ATOMS][n - 1])
        if first != 0 or last < 0 or count_last < 0:
            raise DatasetError(f"{path}: inconsistent offsets (first {first}, last {last})")
        total = last + count_last
    for field in fields.values():
        if field.per_atom and f[field.path].shape[0] < total:
            raise DatasetError(
                f"{path}: '/{field.path}' has {f[field.path].shape[0]} rows but the offsets"
                f" need {total} atoms (inconsistent lengths)"
            )
    ordered = {c.name: fields[c.name] for c in CORE_FIELDS}
    ordered.update({k: v for k, v in fields.items() if k not in ordered})
    return Layout(ordered, n, total, attrs)


# ---------------------------------------------------------------- reader


class H5Dataset(Sequence[Atoms]):
    """Lazy read access to a dataset file, safe to pickle into DataLoader workers.

    Opening checks the layout (``DatasetError`` if wrong) and reads no arrays;
    the HDF5 handle is opened on first data access, reopened in a new
    process, and dropped by ``__getstate__``. ``ds[i]`` reads only structure
    ``i``'s rows. Only the ``n_structures`` committed at opening are visible.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        with open_h5(self.path) as f:
            self._layout = read_layout(f, self.path)
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        self._ds: dict[str, h5py.Dataset] = {}
        self._n_atoms: np.ndarray | None = None

    # pickling: never ship an open HDF5 handle
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_h5=None, _pid=None, _ds={})
        return state

    def _dataset(self, name: str) -> h5py.Dataset:
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid, self._ds = open_h5(self.path), os.getpid(), {}
        if name not in self._ds:
            self._ds[name] = self._h5[name]
        return self._ds[name]

    def close(self) -> None:
        """Drop the HDF5 handle (it reopens on the next access)."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._pid, self._ds = None, None, {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._layout.n_structures

    def __repr__(self) -> str:
        return f"H5Dataset({str(self.path)!r}, n_structures={len(self)})"

    @property
    def fields(self) -> dict[str, Field]:
        """Every array of the file by name (core ones first)."""
        return dict(self._layout.fields)

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes (format, format_version, units, ...)."""
        return dict(self._layout.attrs)

    @property
    def n_atoms_total(self) -> int:
        return self._layout.n_atoms_total

    def keys(self) -> list[str]:
        """Names that ``get_arrays`` can return: core arrays then properties."""
        return list(self._layout.fields)

    @property
    def n_atoms(self) -> np.ndarray:
        """Atoms per structure, int64 [S] (read on first access)."""
        if self._n_atoms is None:
            self._n_atoms = self.column(N_ATOMS)
        return self._n_atoms

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"structure {i} out of range for {n} structures")
        return int(i) % n

    def _read(self, what: str, sel: Any, i: int | None = None) -> np.ndarray:
        try:
            return self._dataset(what)[sel]
        except (OSError, KeyError) as err:
            where = "" if i is None else f" of structure {i}"
            raise DatasetError(f"{self.path}: cannot read '{what}'{where}: {err}") from err

    def get_arrays(self, i: int) -> dict[str, np.ndarray]:
        """Structure ``i`` as numpy arrays, properties missing for it left out.

        numbers int64 [n], positions float64 [n, 3] Angstrom, cell [3, 3],
        pbc bool [3], then per-structure ``[...]`` and per-atom ``[n, ...]``
        properties in the file's dtypes (strings as 0-d ``S`` arrays).
        """
        i = self._index(i)
        n = int(self._read(f"{STRUCTURES}/{N_ATOMS}", i, i))
        start = int(self._read(f"{STRUCTURES}/{OFFSET}", i, i))
        out: dict[str, np.ndarray] = {}
        for name, field in self._layout.fields.items():
            if name in (N_ATOMS, OFFSET):
                continue
            if field.optional and not self._read(f"{MASKS}/{name}", i, i):
                continue
            sel = slice(start, start + n) if field.per_atom else i
            out[name] = np.asarray(self._read(field.path, sel, i))
        return out

    @overload
    def __getitem__(self, i: int) -> Atoms: ...
    @overload
    def __getitem__(self, i: slice) -> list[Atoms]: ...
    def __getitem__(self, i: int | slice) -> Atoms | list[Atoms]:
        """Structure ``i`` as ``ase.Atoms`` (a list for a slice)."""
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return arrays_to_atoms(self.get_arrays(i), self._layout.fields)

    def __iter__(self) -> Iterator[Atoms]:
        for i in range(len(self)):
            yield self[i]

    def column(self, name: str) -> np.ndarray:
        """One array for all committed rows: [S, ...] or [A, ...] (fill where missing)."""
        field = self._layout.fields[name]
        rows = self.n_atoms_total if field.per_atom else len(self)
        return np.asarray(self._read(field.path, slice(0, rows)))

    def mask(self, name: str) -> np.ndarray:
        """bool [S]: which structures have property ``name`` (all True for core)."""
        if not self._layout.fields[name].optional:
            return np.ones(len(self), dtype=bool)
        return np.asarray(self._read(f"{MASKS}/{name}", slice(0, len(self))))


def validate(path: PathLike) -> Layout:
    """Check a dataset file completely; return its layout or raise ``DatasetError``.

    Beyond the checks on opening, reads every array in blocks: offsets are the
    running sum of atom counts, atomic numbers lie in 0..118, positions and
    cells are finite, missing float values are NaN, and all data is readable.
    """
    path = Path(path)
    with open_h5(path) as f:
        layout = read_layout(f, path)
        try:
            _validate_arrays(f, layout, path)
        except OSError as err:
            raise DatasetError(f"{path}: unreadable data, truncated or corrupt ({err})") from err
    return layout


def _validate_arrays(f: h5py.File, layout: Layout, path: Path) -> None:
    n, expected = layout.n_structures, 0
    step = _COPY_ROWS
    for s0 in range(0, n, step):
        s1 = min(n, s0 + step)
        counts = f[STRUCTURES][N_ATOMS][s0:s1]
        offsets = f[STRUCTURES][OFFSET][s0:s1]
        if (counts < 0).any():
            raise DatasetError(f"{path}: negative atom count near structure {s0}")
        running = expected + np.concatenate([[0], np.cumsum(counts)[:-1]])
        bad = np.flatnonzero(offsets != running)
        if bad.size:
            j = s0 + int(bad[0])
            raise DatasetError(
                f"{path}: inconsistent offsets: structure {j} starts at atom"
                f" {int(offsets[bad[0]])}, expected {int(running[bad[0]])}"
            )
        a0, a1 = expected, expected + int(counts.sum())
        expected = a1
        if not np.isfinite(f[STRUCTURES][CELL][s0:s1]).all():
            raise DatasetError(f"{path}: non-finite cell near structure {s0}")
        numbers = f[ATOMS][NUMBERS][a0:a1]
        if numbers.size and (numbers.min() < 0 or numbers.max() > 118):
            raise DatasetError(f"{path}: atomic numbers outside 0..118 near structure {s0}")
        if not np.isfinite(f[ATOMS][POSITIONS][a0:a1]).all():
            raise DatasetError(f"{path}: non-finite positions near structure {s0}")
        for name, field in layout.fields.items():
            if not field.optional:
                continue
            mask = f[MASKS][name][s0:s1].astype(bool)
            data = f[field.path][a0:a1] if field.per_atom else f[field.path][s0:s1]
            if field.dtype.kind not in "fc":
                continue
            missing = np.repeat(~mask, counts) if field.per_atom else ~mask
            if missing.any() and not np.isnan(data[missing]).all():
                raise DatasetError(f"{path}: '{field.path}' has values where its mask says missing")


# ---------------------------------------------------------------- writer


def _chunk_rows(field: Field) -> int:
    row = max(1, field.dtype.itemsize * int(np.prod(field.shape, dtype=np.int64)))
    return int(min(65536, max(16, _CHUNK_BYTES // row)))


def _create_array(f: h5py.File, field: Field, rows: int) -> h5py.Dataset:
    ds = f.create_dataset(
        field.path,
        shape=(rows, *field.shape),
        maxshape=(None, *field.shape),
        chunks=(_chunk_rows(field), *field.shape),
        dtype=field.dtype,
        fillvalue=_fill_value(field.dtype) if field.optional else _CORE_FILL.get(field.name),
    )
    ds.attrs["origin"] = field.origin
    ds.attrs["unit"] = field.unit
    if field.python_scalar:
        ds.attrs["python_scalar"] = True
    if field.dtype.kind == "S":
        ds.attrs["encoding"] = "utf-8"
    if field.optional:
        mask_field = Field(field.name, False, ORIGIN_CORE, _B1)
        f.create_dataset(
            f"{MASKS}/{field.name}",
            shape=(rows,),
            maxshape=(None,),
            chunks=(_chunk_rows(mask_field),),
            dtype=bool,
            fillvalue=False,
        )
    return ds


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")


def _lock(path: Path) -> int | None:
    """An exclusive advisory lock (flock) on ``path``; RuntimeError if held."""
    if fcntl is None:  # pragma: no cover
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"{path}: another process is writing to this dataset") from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


class DatasetWriter:
    """Append structures to a dataset file, each ``append`` committed on return.

    ``append=False`` replaces an existing file (atomically, by rename).
    ``info_keys`` / ``array_keys``: the ``atoms.info`` / ``atoms.arrays`` keys
    to store (None: every numeric, string or array value; others are skipped
    with a warning). All calculator results that are ASE per-structure or
    per-atom outputs (energy, forces, stress, dipole, charges, ...) are stored.
    ``units`` names the unit of extra properties (``DEFAULT_UNITS`` otherwise).

    A property seen for the first time, or a wider string or dtype, rewrites
    the file into a new one that replaces it by rename (copy-and-swap). A
    writer killed at any point leaves a file holding every committed
    structure; reopening such a file for writing first copies its committed
    part into a fresh file (see ``docs/dataset-format.md``).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        append: bool = True,
        info_keys: Iterable[str] | None = None,
        array_keys: Iterable[str] | None = None,
        units: Mapping[str, str] | None = None,
        fields: Iterable[Field] = (),
    ) -> None:
        self.path = Path(path)
        self._info_keys = None if info_keys is None else tuple(info_keys)
        self._array_keys = None if array_keys is None else tuple(array_keys)
        self._units = dict(units or {})
        self._h5: h5py.File | None = None
        self._ds: dict[str, h5py.Dataset] = {}
        self._lock_fd: int | None = None
        self._fields: dict[str, Field] = {}
        self._n = self._total = 0
        extra = {f.name: f for f in fields if f.name not in _CORE}
        try:
            if append and self.path.exists():
                self._open_existing()
                extra = {k: v for k, v in extra.items() if k not in self._fields}
                if extra:
                    self._rebuild({**self._fields, **extra}, source=self.path)
            else:
                if self.path.exists():
                    self._lock_fd = _lock(self.path)
                self._rebuild({**_CORE, **extra}, source=None)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------ state

    def __len__(self) -> int:
        """Committed structures in the file."""
        return self._n

    @property
    def fields(self) -> dict[str, Field]:
        return dict(self._fields)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (every append is already committed) and release the lock."""
        if self._h5 is not None:
            self._h5.close()
            self._h5, self._ds = None, {}
        _unlock(self._lock_fd)
        self._lock_fd = None

    def _open_swmr(self) -> None:
        self._ds = {}
        self._h5 = h5py.File(self.path, "r+", libver=_LIBVER, locking=False)
        self._h5.swmr_mode = True

    def _dataset(self, name: str) -> h5py.Dataset:
        if name not in self._ds:
            assert self._h5 is not None
            self._ds[name] = self._h5[name]
        return self._ds[name]

    def _open_existing(self) -> None:
        self._lock_fd = _lock(self.path)
        with open_h5(self.path) as f:
            layout = read_layout(f, self.path)
        self._fields, self._n, self._total = (
            layout.fields,
            layout.n_structures,
            layout.n_atoms_total,
        )
        try:
            self._open_swmr()
        except (OSError, ValueError, RuntimeError) as err:
            if "already open for read-only" in str(err):
                raise RuntimeError(
                    f"{self.path}: open for reading in this process; close the"
                    " H5Dataset (or h5py.File) before writing"
                ) from err
            # We hold the lock, so the file carries a killed writer's "open for
            # write" flag, or its HDF5 objects predate SWMR (e.g. h5repack's
            # output): copy the committed rows into a fresh file.
            self._rebuild(self._fields, source=self.path)

    def _rebuild(self, fields: dict[str, Field], source: Path | None) -> None:
        """Write ``fields`` and the committed rows of ``source`` to a new file, then swap."""
        if self._h5 is not None:
            self._h5.close()
            self._h5, self._ds = None, {}
        tmp, new_fd = _temp_path(self.path), None
        try:
            with h5py.File(tmp, "w", libver=_LIBVER, locking=False) as dst:
                dst.attrs.update(
                    format=FORMAT_NAME,
                    format_version=FORMAT_VERSION,
                    energy_unit=ENERGY_UNIT,
                    length_unit=LENGTH_UNIT,
                    creator="tfn_md",
                )
                dst.create_dataset(N_STRUCTURES, data=np.array([0], dtype=np.int64))
                for name in (STRUCTURES, ATOMS, MASKS):
                    dst.create_group(name)
                for field in fields.values():
                    _create_array(dst, field, self._total if field.per_atom else self._n)
                if source is not None and self._n > 0:
                    with open_h5(source) as src:
                        _copy_rows(src, dst, fields, self._n, self._total)
                dst[N_STRUCTURES][0] = self._n
            new_fd = _lock(tmp)
            os.replace(tmp, self.path)
        except BaseException:
            _unlock(new_fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _unlock(self._lock_fd)
        self._lock_fd, self._fields = new_fd, dict(fields)
        self._open_swmr()

    # ------------------------------------------------ appending

    def append(self, atoms: Atoms) -> None:
        """Write one structure and commit it."""
        self._write([_record_from_atoms(atoms, self._info_keys, self._array_keys, self._units)])

    def extend(self, atoms: Iterable[Atoms], commit_every: int = 1000, progress: Any = None) -> int:
        """Write structures, committing every ``commit_every``; returns how many.

        ``progress``: an optional tqdm-like object whose ``update(k)`` is called.
        """
        batch: list[_Record] = []
        count = 0
        for item in atoms:
            batch.append(_record_from_atoms(item, self._info_keys, self._array_keys, self._units))
            if len(batch) >= commit_every:
                count += self._commit(batch, progress)
        return count + self._commit(batch, progress)

    def _commit(self, batch: list[_Record], progress: Any) -> int:
        k = len(batch)
        if k:
            self._write(batch)
            batch.clear()
            if progress is not None:
                progress.update(k)
        return k

    def append_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Write one structure given as ``H5Dataset.get_arrays`` returns it, and commit.

        Every property must already be a field of this file (pass ``fields=``).
        """
        self._write([self._record_from_arrays(arrays)])

    def extend_arrays(
        self,
        items: Iterable[Mapping[str, np.ndarray]],
        commit_every: int = 1000,
        progress: Any = None,
    ) -> int:
        """``append_arrays`` for many structures, committing every ``commit_every``."""
        batch: list[_Record] = []
        count = 0
        for arrays in items:
            batch.append(self._record_from_arrays(arrays))
            if len(batch) >= commit_every:
                count += self._commit(batch, progress)
        return count + self._commit(batch, progress)

    def _record_from_arrays(self, arrays: Mapping[str, np.ndarray]) -> _Record:
        unknown = set(arrays) - set(self._fields)
        if unknown:
            raise ValueError(f"unknown properties {sorted(unknown)}; pass them as fields=")
        values = {k: np.asarray(v) for k, v in arrays.items() if self._fields[k].optional}
        return _Record(
            numbers=np.asarray(arrays[NUMBERS], dtype=np.int64),
            positions=np.asarray(arrays[POSITIONS], dtype=np.float64),
            cell=np.asarray(arrays[CELL], dtype=np.float64),
            pbc=np.asarray(arrays[PBC], dtype=bool),
            values=values,
            fields={k: self._fields[k] for k in values},
        )

    def _write(self, records: list[_Record]) -> None:
        fields = dict(self._fields)
        for record in records:
            for name, field in record.fields.items():
                fields[name] = field if name not in fields else _merge_field(fields[name], field)
        if fields != self._fields:
            self._rebuild(fields, source=self.path)
        assert self._h5 is not None
        k = len(records)
        counts = np.array([len(r.numbers) for r in records], dtype=np.int64)  # [k]
        s0, s1 = self._n, self._n + k
        a0, a1 = self._total, self._total + int(counts.sum())
        columns: dict[str, np.ndarray] = {
            N_ATOMS: counts,
            OFFSET: a0 + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
            CELL: np.stack([r.cell for r in records]),  # [k, 3, 3]
            PBC: np.stack([r.pbc for r in records]),  # [k, 3]
            NUMBERS: np.concatenate([r.numbers for r in records]),  # [a1 - a0]
            POSITIONS: np.concatenate([r.positions for r in records]).reshape(-1, 3),
        }
        masks: dict[str, np.ndarray] = {}
        for name, field in self._fields.items():
            if not field.optional:
                continue
            mask = np.array([name in r.values for r in records], dtype=bool)  # [k]
            parts = []
            for r, c in zip(records, counts, strict=True):
                rows = (int(c),) if field.per_atom else ()
                if name in r.values:
                    parts.append(
                        np.asarray(r.values[name]).astype(field.dtype).reshape(rows + field.shape)
                    )
                else:
                    parts.append(np.full(rows + field.shape, _fill_value(field.dtype), field.dtype))
            columns[name] = np.concatenate(parts) if field.per_atom else np.stack(parts)
            masks[name] = mask
        for name, data in columns.items():
            field = self._fields[name]
            start, stop = (a0, a1) if field.per_atom else (s0, s1)
            _write_rows(self._dataset(field.path), start, stop, data)
        for name, mask in masks.items():
            _write_rows(self._dataset(f"{MASKS}/{name}"), s0, s1, mask)
        self._h5.flush()  # every row of the new structures is in the file ...
        self._dataset(N_STRUCTURES)[0] = s1
        self._h5.flush()  # ... before the count that makes them visible
        self._n, self._total = s1, a1


def _write_rows(ds: h5py.Dataset, start: int, stop: int, data: np.ndarray) -> None:
    """Write rows ``start:stop``, growing the dataset a whole chunk at a time."""
    if stop == start:
        return
    if ds.shape[0] < stop:
        rows = ds.chunks[0]
        ds.resize(-(-stop // rows) * rows, axis=0)  # rows past the count are ignored
    ds[start:stop] = data


def _copy_rows(
    src: h5py.File, dst: h5py.File, fields: dict[str, Field], n: int, total: int
) -> None:
    """Copy the committed rows of every field (and mask) present in ``src``."""
    for name, field in fields.items():
        todo = [(field.path, total if field.per_atom else n)]
        if field.optional:
            todo.append((f"{MASKS}/{name}", n))
        for key, rows in todo:
            if key not in src:
                continue  # a new field: left at its fill value, mask False
            for r0 in range(0, rows, _COPY_ROWS):
                r1 = min(rows, r0 + _COPY_ROWS)
                dst[key][r0:r1] = src[key][r0:r1].astype(dst[key].dtype)


def write_atoms(
    path: PathLike,
    atoms: Atoms | Iterable[Atoms],
    *,
    append: bool = True,
    info_keys: Iterable[str] | None = None,
    array_keys: Iterable[str] | None = None,
    units: Mapping[str, str] | None = None,
    commit_every: int = 1000,
    progress: Any = None,
) -> int:
    """Write structures to a dataset file (appending by default); returns how many.

    Structures are committed every ``commit_every``: a killed run keeps every
    complete batch. See ``DatasetWriter`` for the arguments.
    """
    if isinstance(atoms, Atoms):
        atoms = [atoms]
    with DatasetWriter(
        path, append=append, info_keys=info_keys, array_keys=array_keys, units=units
    ) as writer:
        return writer.extend(atoms, commit_every=commit_every, progress=progress)
