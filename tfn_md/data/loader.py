"""From dataset files to model batches, and the statistics a model is set up with.

* :class:`GraphDataset` - structure i of an :class:`H5Dataset` as (Graph, targets);
  the neighbour list is built on the fly (lazy, DataLoader-worker safe).
* :func:`collate_batch` - a list of items -> one batched Graph and target dict:
  ``energy`` [B], ``forces`` [N, 3], ``stress`` [B, 3, 3] (+ ``<name>_mask`` [B] or [N]
  where a structure lacks a property), named vector targets per atom [N, 3] or per
  structure [B, 3].
* :func:`dataset_statistics` - E0 per element by least squares on the energies, the
  force RMS as energy scale, the mean neighbour count.
"""

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols
from ase.stress import voigt_6_to_full_3x3_stress

from .. import keys
from ..graph import Graph, atoms_to_graph, collate
from .reader import H5Dataset

__all__ = [
    "GraphDataset",
    "Targets",
    "check_labels",
    "collate_batch",
    "dataset_statistics",
    "shortest_distances",
    "species_in",
]


class Targets(dict):
    """Label name -> tensor, knowing which labels are per atom (``per_atom``): taken from
    the dataset file's field metadata, never guessed from shapes (a one-atom
    structure's per-atom vector [1, 3] looks like a per-structure one)."""

    def __init__(self, *args, per_atom=frozenset(), **kwargs):
        super().__init__(*args, **kwargs)
        self.per_atom = frozenset(per_atom)

    def to(self, device=None, dtype=None) -> "Targets":
        """Tensors moved to ``device``; floating ones also cast to ``dtype``."""
        moved = {k: v.to(device, dtype if v.is_floating_point() else None)
                 for k, v in self.items()}
        return Targets(moved, per_atom=self.per_atom)


class GraphDataset(torch.utils.data.Dataset):
    """(Graph, targets) for the structures ``indices`` of a dataset file (float64 tensors).

    ``vector_keys``: vector labels to load, each a property of the file with rows of
    shape (3,), per atom or per structure (``ValueError`` naming the key otherwise).
    ``charges``: also load the atomic charges [n] (e) where a structure has them. A
    structure's total charge (a ``charge`` property, e) goes to ``Graph.charge``."""

    def __init__(self, path, cutoff: float, indices=None, vector_keys=(), charges=False):
        self.h5 = H5Dataset(path)
        self.cutoff = cutoff
        self.indices = np.arange(len(self.h5)) if indices is None else np.asarray(indices)
        self.vector_keys = tuple(vector_keys)
        fields = self.h5.fields
        vectors = sorted(k for k, f in fields.items() if f.optional and f.shape == (3,)
                         and f.dtype.kind in "iuf")
        for name in self.vector_keys:
            if name not in vectors:
                raise ValueError(
                    f"loss.vectors names {name!r}, which is not a vector property of {path} "
                    f"(allowed: {vectors or 'none in this file'})"
                )
        self.charges = bool(charges)
        self.per_atom = frozenset({keys.FORCES} | {k for k in self.vector_keys
                                                  if fields[k].per_atom}
                                  | ({keys.CHARGES} if self.charges else set()))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        arrays = self.h5.get_arrays(int(self.indices[k]))
        atoms = _atoms(arrays)
        graph = atoms_to_graph(atoms, self.cutoff, dtype=torch.float64)
        t = Targets(per_atom=self.per_atom)
        if keys.ENERGY in arrays:
            t[keys.ENERGY] = torch.tensor([float(arrays[keys.ENERGY])], dtype=torch.float64)
        if keys.FORCES in arrays:
            t[keys.FORCES] = torch.as_tensor(arrays[keys.FORCES], dtype=torch.float64)
        if keys.STRESS in arrays:
            s = voigt_6_to_full_3x3_stress(np.asarray(arrays[keys.STRESS], dtype=float))
            t[keys.STRESS] = torch.as_tensor(s, dtype=torch.float64)[None]
        for name in self.vector_keys:
            if name in arrays:
                v = torch.as_tensor(np.asarray(arrays[name], float), dtype=torch.float64)
                t[name] = v.reshape(-1, 3)  # [n, 3] per atom, [1, 3] per structure
        if self.charges and keys.CHARGES in arrays:
            t[keys.CHARGES] = torch.as_tensor(np.asarray(arrays[keys.CHARGES], float),
                                              dtype=torch.float64).reshape(-1)  # [n]
        return graph, t


def _atoms(arrays):
    from ase import Atoms

    atoms = Atoms(
        numbers=arrays[keys.NUMBERS],
        positions=arrays[keys.POSITIONS],
        cell=arrays[keys.CELL],
        pbc=arrays[keys.PBC],
    )
    if "charge" in arrays:  # the structure's total charge, e
        atoms.info["charge"] = float(np.asarray(arrays["charge"]).reshape(-1)[0])
    return atoms


def collate_batch(items) -> tuple[Graph, Targets]:
    """Batch (Graph, targets) items; missing targets are zero-filled with a mask
    (``<name>_mask``: [N] for per-atom labels, [B] for per-structure ones)."""
    graphs = [g for g, _ in items]
    batch = collate(graphs)
    per_atom = frozenset({keys.FORCES}).union(*(getattr(t, "per_atom", ()) for _, t in items))
    names = sorted({k for _, t in items for k in t})
    targets = Targets(per_atom=per_atom)
    for name in names:
        present = [name in t for _, t in items]
        template = next(t[name] for _, t in items if name in t)
        atomic = name in per_atom
        rows = [
            t[name]
            if name in t
            else torch.zeros(
                (g.n_atoms if atomic else 1,) + template.shape[1:], dtype=template.dtype
            )
            for g, (_, t) in zip(graphs, items)
        ]
        targets[name] = torch.cat(rows)
        mask = torch.tensor(present)
        targets[f"{name}_mask"] = mask[batch.batch] if atomic else mask
    return batch, targets


def species_in(dataset: H5Dataset) -> list[str]:
    """Element symbols present in a dataset file, in atomic-number order."""
    zs = np.unique(dataset.column(keys.NUMBERS))
    return [chemical_symbols[z] for z in zs]


def dataset_statistics(
    dataset: H5Dataset, indices, species: list[str], cutoff: float, max_structures: int = 2000
) -> dict:
    """E0 [n_species] (least squares of E on element counts), scale (force RMS, or the
    per-atom energy-residual std without forces), mean neighbour count (over the first
    ``max_structures`` of ``indices``).

    Free atoms (structures of one atom with an energy, anywhere in ``indices``) fix E0 of
    their element to their energy (the mean where several); the other elements' E0 are
    fitted to the rest. The model's energy of an atom without neighbours is its E0, so
    fragments pulled apart then end at the energies of their atoms: with E0 fitted to
    frames of one molecule (which fix only a sum over its elements) they end anywhere."""
    all_indices = np.asarray(indices)
    indices = all_indices[:max_structures]
    index = {atomic_numbers[s]: k for k, s in enumerate(species)}
    fixed: dict[int, list[float]] = {}  # species index -> energies of its free atoms
    for i in all_indices[dataset.n_atoms[all_indices] == 1]:
        a = dataset.get_arrays(int(i))
        if keys.ENERGY in a:
            fixed.setdefault(index[int(a[keys.NUMBERS][0])], []).append(float(a[keys.ENERGY]))
    counts, energies, force_sq, n_force, neighbours, n_atoms = [], [], 0.0, 0, 0, 0
    for i in indices:
        a = dataset.get_arrays(int(i))
        c = np.zeros(len(species))
        for z in a[keys.NUMBERS]:
            c[index[int(z)]] += 1
        if keys.ENERGY in a:
            counts.append(c)
            energies.append(float(a[keys.ENERGY]))
        if keys.FORCES in a:
            force_sq += float((a[keys.FORCES] ** 2).sum())
            n_force += a[keys.FORCES].size
        g = atoms_to_graph(_atoms(a), cutoff)
        neighbours += g.edge_index.shape[1]
        n_atoms += g.n_atoms
    counts, energies = np.array(counts), np.array(energies)
    e0 = np.zeros(len(species))
    scale = 1.0
    for k, values in fixed.items():
        e0[k] = np.mean(values)
    if len(energies):
        free = [k for k in range(len(species)) if k not in fixed]
        if free:
            e0[free] = np.linalg.lstsq(counts[:, free], energies - counts @ e0, rcond=None)[0]
        resid = (energies - counts @ e0) / counts.sum(1)
        scale = float(resid.std()) or 1.0
    if n_force:
        scale = float(np.sqrt(force_sq / n_force))
    return {
        "e0": e0.tolist(),
        "scale": scale,
        "avg_num_neighbors": max(neighbours / max(n_atoms, 1), 1.0),
    }


def shortest_distances(dataset: H5Dataset, indices, species: list[str],
                       cutoff: float) -> np.ndarray:
    """Per species pair the shortest interatomic distance within ``cutoff`` over the
    structures ``indices`` of ``dataset`` [S, S] (A, symmetric; 0 for a pair that never
    comes within the cutoff): the inner radii of the model's wall
    (:func:`tfn_md.nn.repulsion.wall_pair_energy`)."""
    index = np.full(len(chemical_symbols), -1)
    index[[atomic_numbers[s] for s in species]] = np.arange(len(species))
    best = np.full((len(species), len(species)), np.inf)
    for k in np.asarray(indices):
        g = atoms_to_graph(_atoms(dataset.get_arrays(int(k))), cutoff, torch.float64)
        i, j = g.edge_index.numpy()
        if not len(i):
            continue
        vec = (g.positions[j] - g.positions[i] + g.shifts @ g.cell[0]).numpy()
        s = index[g.numbers.numpy()]
        np.minimum.at(best, (s[i], s[j]), np.linalg.norm(vec, axis=1))
    best = np.minimum(best, best.T)
    return np.where(np.isfinite(best), best, 0.0)


def check_labels(dataset: H5Dataset, indices, names) -> None:
    """Raise ``ValueError`` naming the file, label, structure and value if a label
    ``names`` that structures ``indices`` carry (mask True) is not finite."""
    indices = np.asarray(indices, dtype=np.int64)
    fields = dataset.fields
    counts = dataset.n_atoms
    for name in names:
        if name not in fields:
            continue
        field = fields[name]
        chosen = np.zeros(len(dataset), bool)
        chosen[indices] = True
        labelled = chosen & dataset.mask(name)
        values = dataset.column(name)
        rows = np.repeat(labelled, counts) if field.per_atom else labelled
        finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        bad = np.flatnonzero(rows & ~finite)
        if bad.size:
            k = int(bad[0])
            i = int(np.searchsorted(np.cumsum(counts), k, side="right")) if field.per_atom else k
            value = values[k].tolist()
            raise ValueError(
                f"{dataset.path}: label {name!r} of structure {i} is {value}: labels must be "
                f"finite (remove the structure, or store it without {name!r})"
            )
