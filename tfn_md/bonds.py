"""The covalent bond graph of a structure: which pairs are bonded (closer than 1.3 times
the sum of their covalent radii, ASE's natural cutoffs) and, for a bond, the atoms on
each side of it. Used by the report card's scans (:mod:`tfn_md.check.molecule`) and by
the learn loop's stretched bonds and exploration flags (:mod:`tfn_md.learn`)."""

import numpy as np
from ase import Atoms
from ase.neighborlist import natural_cutoffs, neighbor_list

__all__ = ["bonds", "smaller_side"]


def bonds(atoms: Atoms) -> list[tuple[int, int]]:
    """Pairs i < j closer than 1.3 times the sum of their covalent radii."""
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.3))
    return sorted({(int(a), int(b)) for a, b in zip(i, j, strict=True) if a < b})


def _side(n: int, edges: list[tuple[int, int]], i: int, j: int) -> np.ndarray | None:
    """Mask of the atoms reached from j without crossing bond i-j (None if i is reached:
    the bond is in a ring)."""
    neighbours = {k: set() for k in range(n)}
    for a, b in edges:
        if {a, b} != {i, j}:
            neighbours[a].add(b)
            neighbours[b].add(a)
    seen, todo = {j}, [j]
    while todo:
        for k in neighbours[todo.pop()] - seen:
            seen.add(k)
            todo.append(k)
    if i in seen:
        return None
    mask = np.zeros(n, dtype=bool)
    mask[list(seen)] = True
    return mask


def smaller_side(n: int, edges: list[tuple[int, int]], i: int, j: int):
    """(i, j, mask of j's side) with j's side the smaller one (swapped where needed), or
    None for a bond in a ring."""
    mask = _side(n, edges, i, j)
    if mask is None:
        return None
    return (i, j, mask) if mask.sum() <= n / 2 else (j, i, ~mask)
