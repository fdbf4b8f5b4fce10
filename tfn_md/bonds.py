"""The covalent bond graph of a structure: which pairs are bonded (closer than 1.3 times
the sum of their covalent radii, ASE's natural cutoffs), for a bond the atoms on each side
of it, and the hydrogen hops two bonds long. Used by the report card's scans
(:mod:`tfn_md.check.molecule`) and by the learn loop's stretched bonds, hopping hydrogens
and exploration flags (:mod:`tfn_md.learn`)."""

import numpy as np
from ase import Atoms
from ase.neighborlist import natural_cutoffs, neighbor_list

__all__ = ["bonds", "hops", "smaller_side", "turned_toward"]


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


def hops(numbers, edges) -> list[tuple[int, int, int]]:
    """(h, x, y): every hydrogen h bonded to x and every other atom y bonded to x, not to
    h (the ends of a 1,2-hydrogen shift), sorted."""
    neighbours: dict[int, set[int]] = {}
    for i, j in edges:
        neighbours.setdefault(int(i), set()).add(int(j))
        neighbours.setdefault(int(j), set()).add(int(i))
    return sorted({(h, x, y) for h in neighbours if numbers[h] == 1 for x in neighbours[h]
                   for y in neighbours[x] if y != h and y not in neighbours[h]})


def turned_toward(positions: np.ndarray, h: int, x: int, y: int, distance: float
                  ) -> np.ndarray | None:
    """The position [3] of atom h turned about x in the plane h-x-y, |h - x| kept, so that
    |h - y| = ``distance`` (law of cosines; as close as the triangle allows); None where
    h, x and y are on a line (no plane)."""
    r = float(np.linalg.norm(positions[h] - positions[x]))
    w = positions[y] - positions[x]
    length = float(np.linalg.norm(w))
    w = w / length
    u = (positions[h] - positions[x]) / r
    side = u - np.dot(u, w) * w
    if np.linalg.norm(side) < 1e-6:
        return None
    side /= np.linalg.norm(side)
    cos = np.clip((r**2 + length**2 - distance**2) / (2 * r * length), -1.0, 1.0)
    return positions[x] + r * (cos * w + np.sqrt(1.0 - cos**2) * side)
