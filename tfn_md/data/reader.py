"""Reading dataset files: lazy random access (:class:`H5Dataset`) and full checks
(:func:`validate`). Layout and guarantees: :mod:`tfn_md.data.format` and
``docs/dataset-format.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, overload

import h5py
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from tfn_md.data.format import (
    _COPY_ROWS,
    ATOMS,
    MASKS,
    N_ATOMS,
    OFFSET,
    ORIGIN_CALC,
    ORIGIN_INFO,
    STRUCTURES,
    DatasetError,
    Field,
    Layout,
    PathLike,
    being_written,
    open_h5,
    read_layout,
    read_rows,
)
from tfn_md.keys import CELL, NUMBERS, PBC, POSITIONS

__all__ = ["H5Dataset", "arrays_to_atoms", "validate"]


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
        # a writer holds the file (or was killed holding it): the chunk it rewrites
        # last may fail its checksum although its committed rows are intact
        self._tolerant = being_written(self.path)
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
            counts, offsets = self.column(N_ATOMS), self.column(OFFSET)
            expected = np.concatenate([[0], np.cumsum(counts)[:-1]])
            bad = np.flatnonzero((counts < 0) | (offsets != expected))
            if bad.size:
                self._bad_index(int(bad[0]), int(counts[bad[0]]), int(offsets[bad[0]]))
            self._n_atoms = counts
        return self._n_atoms

    def _bad_index(self, i: int, n: int, start: int) -> None:
        raise DatasetError(
            f"{self.path}: damaged index: structure {i} has n_atoms {n} and offset {start}"
            f" (allowed: n_atoms >= 0, offsets the running sum of atom counts, within the"
            f" file's {self.n_atoms_total} atoms); `tfn-md data validate` checks the whole file"
        )

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"structure {i} out of range for {n} structures")
        return int(i) % n

    def _read(self, what: str, start: int, stop: int, i: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of dataset ``what``; ``DatasetError`` if unreadable."""
        try:
            return read_rows(self._dataset(what), start, stop, self._tolerant)
        except (OSError, KeyError) as err:
            where = "" if i is None else f" of structure {i}"
            raise DatasetError(
                f"{self.path}: cannot read '{what}'{where} (checksum mismatch or corrupt"
                f" data): {err}"
            ) from err

    def get_arrays(self, i: int) -> dict[str, np.ndarray]:
        """Structure ``i`` as numpy arrays, properties missing for it left out.

        numbers int64 [n], positions float64 [n, 3] Angstrom, cell [3, 3],
        pbc bool [3], then per-structure ``[...]`` and per-atom ``[n, ...]``
        properties in the file's dtypes (strings as 0-d ``S`` arrays).
        """
        i = self._index(i)
        n = int(self._read(f"{STRUCTURES}/{N_ATOMS}", i, i + 1, i)[0])
        start = int(self._read(f"{STRUCTURES}/{OFFSET}", i, i + 1, i)[0])
        if n < 0 or start < 0 or start + n > self.n_atoms_total:
            self._bad_index(i, n, start)
        out: dict[str, np.ndarray] = {}
        for name, field in self._layout.fields.items():
            if name in (N_ATOMS, OFFSET):
                continue
            if field.optional and not self._read(f"{MASKS}/{name}", i, i + 1, i)[0]:
                continue
            rows = (start, start + n) if field.per_atom else (i, i + 1)
            value = self._read(field.path, *rows, i)
            out[name] = value if field.per_atom else np.asarray(value[0])
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
        return self._read(field.path, 0, rows)

    def mask(self, name: str) -> np.ndarray:
        """bool [S]: which structures have property ``name`` (all True for core)."""
        if not self._layout.fields[name].optional:
            return np.ones(len(self), dtype=bool)
        return self._read(f"{MASKS}/{name}", 0, len(self)).astype(bool)


def validate(path: PathLike) -> Layout:
    """Check a dataset file completely; return its layout or raise ``DatasetError``.

    Beyond the checks on opening (which include the rows, shape and dtype of
    properties named like ASE results), reads every array in blocks: chunk
    checksums (files written by tfn_md carry them), offsets are the running sum
    of atom counts, atomic numbers lie in 0..118, positions and cells are
    finite, every float value a mask marks present is finite, and missing float
    values are NaN.
    """
    path = Path(path)
    tolerant = being_written(path)
    with open_h5(path) as f:
        layout = read_layout(f, path)
        _validate_arrays(f, layout, path, tolerant)
    return layout


def _block(f: h5py.File, key: str, start: int, stop: int, path: Path, tolerant: bool):
    try:
        return read_rows(f[key], start, stop, tolerant)
    except OSError as err:
        raise DatasetError(
            f"{path}: '/{key}' rows {start}..{stop - 1} cannot be read: checksum mismatch or"
            f" corrupt data ({err})"
        ) from err


def _validate_arrays(f: h5py.File, layout: Layout, path: Path, tolerant: bool) -> None:
    n, expected = layout.n_structures, 0
    step = _COPY_ROWS

    def block(key: str, a: int, b: int) -> np.ndarray:
        return _block(f, key, a, b, path, tolerant)

    for s0 in range(0, n, step):
        s1 = min(n, s0 + step)
        counts = block(f"{STRUCTURES}/{N_ATOMS}", s0, s1)
        offsets = block(f"{STRUCTURES}/{OFFSET}", s0, s1)
        if (counts < 0).any():
            j = s0 + int(np.flatnonzero(counts < 0)[0])
            raise DatasetError(f"{path}: structure {j} has negative atom count {counts[j - s0]}")
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
        if a1 > layout.n_atoms_total:
            raise DatasetError(
                f"{path}: atom counts up to structure {s1 - 1} need {a1} atoms, the file"
                f" has {layout.n_atoms_total}"
            )
        owner = np.repeat(np.arange(s0, s1), counts)  # structure of each atom row
        if not np.isfinite(block(f"{STRUCTURES}/{CELL}", s0, s1)).all():
            raise DatasetError(f"{path}: non-finite cell near structure {s0}")
        numbers = block(f"{ATOMS}/{NUMBERS}", a0, a1)
        if numbers.size and (numbers.min() < 0 or numbers.max() > 118):
            j = int(owner[np.flatnonzero((numbers < 0) | (numbers > 118))[0]])
            raise DatasetError(f"{path}: structure {j} has atomic numbers outside 0..118")
        finite = np.isfinite(block(f"{ATOMS}/{POSITIONS}", a0, a1)).reshape(a1 - a0, -1)
        if not finite.all():
            j = int(owner[np.flatnonzero(~finite.all(axis=1))[0]])
            raise DatasetError(f"{path}: structure {j} has non-finite positions")
        for name, field in layout.fields.items():
            if not field.optional:
                continue
            mask = block(f"{MASKS}/{name}", s0, s1).astype(bool)
            data = block(field.path, a0, a1) if field.per_atom else block(field.path, s0, s1)
            if field.dtype.kind not in "fc":
                continue
            present = np.repeat(mask, counts) if field.per_atom else mask
            rows = data.reshape(len(data), -1)
            if (~present).any() and not np.isnan(rows[~present]).all():
                raise DatasetError(f"{path}: '{field.path}' has values where its mask says missing")
            bad = present & ~np.isfinite(rows).all(axis=1)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                j = int(owner[k]) if field.per_atom else s0 + k
                value = rows[k].tolist() if rows.shape[1] > 1 else rows[k, 0].item()
                raise DatasetError(
                    f"{path}: '{field.path}' of structure {j} is {value}: stored values must"
                    " be finite (a missing value is marked in its mask)"
                )
