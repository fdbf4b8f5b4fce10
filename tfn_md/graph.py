"""The graph the model sees, and the neighbour list that builds it.

A :class:`Graph` is a batch of structures, atoms concatenated:

* ``numbers``    [n_atoms] int64 atomic numbers
* ``positions``  [n_atoms, 3] Angstrom
* ``cell``       [n_graphs, 3, 3] rows are cell vectors (zeros without a cell)
* ``batch``      [n_atoms] int64 structure index of each atom
* ``edge_index`` [2, n_edges] int64, row 0 the centre atom i, row 1 its neighbour j
* ``shifts``     [n_edges, 3] integer cell shifts S (stored in the float dtype)
* ``node_scalars`` optional [n_atoms, k] extra per-atom inputs (e.g. masses)

The edge vector r_ij = x_j - x_i + S_ij · cell is *not* stored: the model
recomputes it from positions and cell, so autograd sees forces and stress.
The neighbour list knows nothing about the model; it is :mod:`vesin`'s
(triclinic cells, cells smaller than twice the cutoff, mixed pbc, no cell).
"""

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from ase import Atoms
from ase.cell import Cell
from torch import Tensor

__all__ = [
    "Graph",
    "VerletList",
    "all_pairs",
    "atoms_to_graph",
    "check_atoms",
    "collate",
    "neighbour_list",
    "total_charge",
]

MIN_DISTANCE = 1e-6  # Angstrom: closer pairs are an input error


@dataclass
class Graph:
    numbers: Tensor
    positions: Tensor
    cell: Tensor
    batch: Tensor
    edge_index: Tensor
    shifts: Tensor
    n_graphs: int = 1
    node_scalars: Tensor | None = None
    charge: Tensor | None = None  # total charge of each structure [n_graphs] (e); None: 0

    def to(self, device=None, dtype=None) -> "Graph":
        """Move to ``device``; floating tensors also to ``dtype``."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                v = v.to(device=device, dtype=dtype if v.is_floating_point() else None)
            out[f.name] = v
        return replace(self, **out)

    @property
    def n_atoms(self) -> int:
        return self.numbers.shape[0]


def check_atoms(atoms: Atoms, cutoff: float | None = None) -> None:
    """Raise ``ValueError`` naming the problem for positions or cells a model cannot use.

    Checked: finite positions and cell; a non-singular cell along periodic
    directions; with a ``cutoff``, every periodic direction's cell height (the
    distance between opposite faces) at least ``cutoff / MAX_IMAGE_LAYERS`` (a
    nearly flat cell would make the neighbour search visit millions of periodic
    images); the extent of the atoms across the non-periodic directions at most
    ``MAX_EXTENT`` (the neighbour search's cell grid spans it: far larger boxes
    crash or stall it).
    """
    pos = atoms.positions
    if not np.all(np.isfinite(pos)):
        bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
        raise ValueError(f"positions contain NaN or infinite values (atoms {bad[:10].tolist()})")
    cell = atoms.cell.array
    if not np.all(np.isfinite(cell)):
        raise ValueError("cell contains NaN or infinite values")
    pbc = atoms.pbc
    if pbc.any():
        lengths = np.linalg.norm(cell, axis=1)
        periodic_vectors = cell[pbc]
        if np.any(lengths[pbc] < 1e-8) or np.linalg.matrix_rank(
            periodic_vectors, tol=1e-8
        ) < len(periodic_vectors):
            raise ValueError(
                f"pbc={pbc.tolist()} but the cell is singular along a periodic "
                f"direction: cell={cell.tolist()}"
            )
        if cutoff is not None:
            _check_heights(cell, pbc, cutoff)
    if len(pos) > 1:
        _check_extent(pos, cell, pbc)


MAX_IMAGE_LAYERS = 100  # periodic images along one direction the neighbour search may visit
MAX_EXTENT = 5000.0  # Angstrom: span of the atoms across non-periodic directions


def _check_heights(cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> None:
    """Cell heights h_k = |det| / |a_i x a_j| along periodic directions k must be at least
    cutoff / MAX_IMAGE_LAYERS."""
    full = Cell(cell).complete().array  # non-periodic zero vectors replaced by normals
    volume = abs(np.linalg.det(full))
    for k in np.flatnonzero(pbc):
        height = volume / np.linalg.norm(np.cross(full[(k + 1) % 3], full[(k + 2) % 3]))
        if height < cutoff / MAX_IMAGE_LAYERS:
            raise ValueError(
                f"the cell is nearly flat: its height along periodic direction {k} is "
                f"{height:.3g} A, allowed >= cutoff / {MAX_IMAGE_LAYERS} = "
                f"{cutoff / MAX_IMAGE_LAYERS:.3g} A (the neighbour search would visit "
                f"{2 * int(np.ceil(cutoff / height)) + 1} periodic images along it); "
                f"cell={cell.tolist()}"
            )


def _check_extent(pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """The atoms' span across the directions orthogonal to every periodic cell vector."""
    periodic = cell[pbc]
    if len(periodic) == 3:
        return
    if len(periodic):
        q, _ = np.linalg.qr(np.concatenate([periodic.T, np.eye(3)], axis=1))
        free = q[:, len(periodic):3].T  # orthonormal directions no cell vector spans
    else:
        free = np.eye(3)
    coords = pos @ free.T  # [n, 3 - n_periodic]
    span = coords.max(axis=0) - coords.min(axis=0)
    if span.max() > MAX_EXTENT:
        raise ValueError(
            f"the atoms span {span.max():.3g} A along a non-periodic direction "
            f"(pbc={pbc.tolist()}); allowed <= {MAX_EXTENT:g} A. An atom that far away is a "
            "damaged or unwrapped structure; remove it or use a periodic cell"
        )


def neighbour_list(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, S) for all pairs with |x_j - x_i + S · cell| < cutoff, i != j or S != 0,
    sorted by the centre atom i.

    Shapes [n_edges], [n_edges], [n_edges, 3]. Raises ``ValueError`` for two atoms
    closer than 1e-6 A.
    """
    from vesin import NeighborList

    check_atoms(atoms, cutoff)
    if len(atoms) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
    nl = NeighborList(cutoff=cutoff, full_list=True)
    i, j, s, d = nl.compute(atoms.positions, _box(atoms), atoms.pbc, quantities="ijSd")
    _check_distances(i, j, d)
    i, j, s = (a.astype(np.int64, copy=False) for a in (i, j, s))
    if len(i) > 1 and np.any(i[1:] < i[:-1]):  # sorted by centre: scatters stay local
        order = np.argsort(i, kind="stable")
        i, j, s = i[order], j[order], s[order]
    return i, j, s


def _box(atoms: Atoms) -> np.ndarray:
    """The cell as the neighbour search sees it (zeros without periodic directions)."""
    return atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))


def _check_distances(i: np.ndarray, j: np.ndarray, d: np.ndarray) -> None:
    if len(d) and d.min() < MIN_DISTANCE:
        k = int(np.argmin(d))
        raise ValueError(
            f"atoms {i[k]} and {j[k]} are {d[k]:.3g} A apart (closer than {MIN_DISTANCE} A): "
            "overlapping atoms"
        )


class VerletList:
    """A neighbour list with a Verlet skin, for MD: pairs are searched within
    ``cutoff + skin`` and the search is reused while no atom has moved more than skin / 2
    since it was made (and numbers, cell and pbc are unchanged); then no pair can have
    come from beyond ``cutoff + skin``. Each call returns exactly the pairs within
    ``cutoff`` (distances recomputed, O(n_edges)), in centre order, so results are those
    of a fresh :func:`neighbour_list` up to the order of summation, and the same tuple
    object as last time when the pairs have not changed. ``skin = 0`` searches every
    call. ``n_builds`` counts the searches."""

    def __init__(self, cutoff: float, skin: float = 0.5):
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.n_builds = 0
        self._ref = None  # (positions, numbers, cell, pbc) of the last search
        self._pairs = None
        self._kept = None  # (mask of the pairs within the cutoff, those pairs)

    def _stale(self, atoms: Atoms) -> bool:
        if self._ref is None:
            return True
        pos, numbers, cell, pbc = self._ref
        same = (np.array_equal(atoms.numbers, numbers) and np.array_equal(atoms.pbc, pbc)
                and np.array_equal(atoms.cell.array, cell))
        if not same:
            return True
        step = atoms.positions - pos
        moved = np.einsum("ij,ij->i", step, step)
        return bool(moved.max(initial=0.0) > (0.5 * self.skin) ** 2)

    def __call__(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, j, S) as :func:`neighbour_list` gives for ``cutoff``."""
        if self.skin == 0:  # a fresh search every call: nothing to filter
            self.n_builds += 1
            return neighbour_list(atoms, self.cutoff)
        if self._stale(atoms):
            check_atoms(atoms)
            self._pairs = neighbour_list(atoms, self.cutoff + self.skin)
            self._ref = (atoms.positions.copy(), atoms.numbers.copy(), atoms.cell.array.copy(),
                         atoms.pbc.copy())
            self._kept = None
            self.n_builds += 1
        elif not np.isfinite(atoms.positions).all():  # (NaN moves never look stale)
            check_atoms(atoms)  # raises, naming the atoms
        i, j, s = self._pairs
        vec = atoms.positions[j] - atoms.positions[i]
        if atoms.pbc.any():
            vec += s @ atoms.cell.array
        d2 = np.einsum("ij,ij->i", vec, vec)  # squared distances: no norm, no sqrt
        if len(d2) and d2.min() < MIN_DISTANCE**2:
            _check_distances(i, j, np.sqrt(d2))  # raises, naming the atoms
        keep = d2 < self.cutoff**2
        if self._kept is None or not np.array_equal(keep, self._kept[0]):
            self._kept = (keep, (i[keep], j[keep], s[keep]))
        return self._kept[1]  # the same object while the pairs are the same


def all_pairs(n_atoms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ordered pair (i, j), the self-pair i = j included (the paper's tasks)."""
    i, j = np.meshgrid(np.arange(n_atoms), np.arange(n_atoms), indexing="ij")
    return i.ravel(), j.ravel(), np.zeros((n_atoms * n_atoms, 3), np.int64)


def atoms_to_graph(
    atoms: Atoms,
    cutoff: float | None,
    dtype: torch.dtype = torch.float64,
    device=None,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Graph:
    """One structure -> a :class:`Graph`; ``cutoff=None`` connects all pairs (self included).
    ``pairs`` = (i, j, S) found already (e.g. by a :class:`VerletList`) skips the search."""
    if pairs is not None:
        i, j, s = pairs
    elif cutoff is None:
        check_atoms(atoms)
        i, j, s = all_pairs(len(atoms))
    else:
        i, j, s = neighbour_list(atoms, cutoff)
    return Graph(
        numbers=torch.as_tensor(atoms.numbers, dtype=torch.int64, device=device),
        positions=torch.as_tensor(atoms.positions, dtype=dtype, device=device),
        cell=torch.as_tensor(atoms.cell.array, dtype=dtype, device=device)[None],
        batch=torch.zeros(len(atoms), dtype=torch.int64, device=device),
        edge_index=torch.as_tensor(np.stack([i, j]), dtype=torch.int64, device=device),
        shifts=torch.as_tensor(s, dtype=dtype, device=device),
        n_graphs=1,
        charge=total_charge(atoms, dtype, device),
    )


def total_charge(atoms: Atoms, dtype=torch.float64, device=None) -> Tensor | None:
    """``atoms.info["charge"]`` (ASE's place for a structure's total charge, e) as [1]."""
    charge = atoms.info.get("charge")
    if charge is None:
        return None
    try:
        value = float(charge)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value):
        raise ValueError(f"atoms.info['charge'] = {charge!r}: the total charge must be a "
                         "finite number (e)")
    return torch.tensor([value], dtype=dtype, device=device)


def collate(graphs: list[Graph]) -> Graph:
    """Concatenate graphs into one batch (atom indices offset, batch index assigned)."""
    offsets = np.cumsum([0] + [g.n_atoms for g in graphs[:-1]])
    graph_offsets = np.cumsum([0] + [g.n_graphs for g in graphs[:-1]])
    return Graph(
        numbers=torch.cat([g.numbers for g in graphs]),
        positions=torch.cat([g.positions for g in graphs]),
        cell=torch.cat([g.cell for g in graphs]),
        batch=torch.cat([g.batch + int(o) for g, o in zip(graphs, graph_offsets)]),
        edge_index=torch.cat([g.edge_index + int(o) for g, o in zip(graphs, offsets)], dim=1),
        shifts=torch.cat([g.shifts for g in graphs]),
        n_graphs=sum(g.n_graphs for g in graphs),
        node_scalars=None
        if graphs[0].node_scalars is None
        else torch.cat([g.node_scalars for g in graphs]),
        charge=None if all(g.charge is None for g in graphs) else torch.cat([
            g.positions.new_zeros(g.n_graphs) if g.charge is None else g.charge
            for g in graphs]),
    )
