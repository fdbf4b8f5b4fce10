"""Writing dataset files: :class:`DatasetWriter` (append, commit, crash-safe) and
:func:`write_atoms`. Layout and guarantees: :mod:`tfn_md.data.format` and
``docs/dataset-format.md``.

Concurrency: a writer holds an exclusive ``flock`` on the file while it is open.
Creating a file takes a lock on its folder first, so two processes creating the
same new file at once never both build it: the second waits, then finds the file
and appends to it (or is told that another process is writing it).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import h5py
import numpy as np
from ase import Atoms
from ase.outputs import all_outputs
from ase.stress import full_3x3_to_voigt_6_stress

from tfn_md.atomic import temp_path
from tfn_md.data.format import (
    _B1,
    _CHUNK_BYTES,
    _COPY_ROWS,
    _CORE,
    _CORE_FILL,
    _LIBVER,
    ATOMS,
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
    Field,
    PathLike,
    _as_value,
    _fill_value,
    _infer_field,
    _merge_field,
    being_written,
    open_h5,
    read_layout,
    read_rows,
)
from tfn_md.keys import CELL, NUMBERS, PBC, POSITIONS, STRESS

try:  # advisory lock against two writers; absent on Windows
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["DatasetWriter", "write_atoms"]

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
        fletcher32=True,
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
            fletcher32=True,
            fillvalue=False,
        )
    return ds


def _lock(path: Path) -> int | None:
    """An exclusive advisory lock (flock) on the file now at ``path``; RuntimeError if held.

    The lock is taken on an open descriptor, so it is checked to be the file still
    at ``path``: a writer that swapped in a new file meanwhile (copy-and-swap)
    holds that one, and we report it busy rather than lock a replaced inode.
    """
    if fcntl is None:  # pragma: no cover
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        raise RuntimeError(f"{path}: another process is writing to this dataset") from None
    return fd


@contextlib.contextmanager
def _folder_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path``'s folder: serialises creating ``path``."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    folder = path.parent if str(path.parent) else Path(".")
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
            with _folder_lock(self.path):  # no other process creates the file meanwhile
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
        tmp, new_fd = temp_path(self.path), None
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
                    tolerant = being_written(source)
                    with open_h5(source) as src:
                        _copy_rows(src, dst, fields, self._n, self._total, tolerant)
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
    src: h5py.File, dst: h5py.File, fields: dict[str, Field], n: int, total: int, tolerant: bool
) -> None:
    """Copy the committed rows of every field (and mask) present in ``src``.

    ``tolerant``: ``src`` was left open by a killed writer (see ``read_rows``)."""
    for name, field in fields.items():
        todo = [(field.path, total if field.per_atom else n)]
        if field.optional:
            todo.append((f"{MASKS}/{name}", n))
        for key, rows in todo:
            if key not in src:
                continue  # a new field: left at its fill value, mask False
            for r0 in range(0, rows, _COPY_ROWS):
                r1 = min(rows, r0 + _COPY_ROWS)
                block = read_rows(src[key], r0, r1, tolerant)
                dst[key][r0:r1] = block.astype(dst[key].dtype)


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
