"""Frames that teach a molecule's potential what its bonds cost: free atoms, stretched
bonds and hopping hydrogens, labelled by the reference with the initial sampling.

Why: frames of one molecule all have the same composition, so the per-element energy
zero E0 is fixed only as a sum over the molecule, and nothing in thermal MD says how
the energy rises as a bond breaks. A potential trained on such data alone put the S-H
dissociation of ethanethiol 0.24 eV above the minimum (GFN2-xTB: 4.05 eV), with a
0.9 eV barrier at 1.9 A, and lost the hydrogen after ~35 ps of MD at 1000 K.

- Free atoms: one frame per element, the atom alone (its reference energy, zero
  forces): the energy of a fragment far away, which fixes E0 element by element.
- Stretched bonds: for each bond whose removal splits the molecule in two (a bridge of
  the bond graph; ring bonds are left out), some frames of the initial sampling with
  the smaller side moved rigidly along the bond until its length is ``factor`` times
  the sum of the two covalent radii, for each factor (default 1.3-3: from a strained
  bond to the plateau of the dissociation curve). A frame in which a pair of elements
  comes closer than in the frame it was made from is left out, so the model's wall
  (fitted to the shortest distances in the data) does not move. They are labelled with
  the energy only: their forces (up to 4 eV/A on fragments far from their own minima)
  took over the force term of the loss (ethanethiol, first training: 700 K force MAE
  14.4 meV/A against 12.3 without them).

- Hopping hydrogens: each hydrogen turned alone about its partner toward each atom two
  bonds away (a neighbour of its partner), its bond length kept, until their distance is
  ``factor`` times the sum of their covalent radii (default 1.05-1.5), from some frames
  of the initial sampling: the path of a 1,2-hydrogen shift, a bridged geometry thermal
  MD never visits. Energy only; a frame with a pair of elements closer than anywhere in
  the initial sampling is left out. Why: with stretched bonds alone an ethylamine
  potential held its bonds for 100 ps at 1000 K, but at 85 ps of one run the amine's
  hydrogen bridged to the next carbon (C-H 1.17 A) where the potential was 2.5 eV below
  GFN2-xTB, with an energy spread of 15 meV.

With free atoms in the data the energy zero E0 of each element is its free atom's energy
(:func:`tfn_md.data.loader.dataset_statistics`), and the model's energy of an atom
without neighbours is E0: an atom pulled beyond the cutoff ends at the free atom's
energy, as in the reference, not wherever a fit to one composition put it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.data import covalent_radii

from ..bonds import hops, smaller_side, turned_toward
from .fields import AL_BOND, AL_STRETCH

__all__ = ["bridges", "free_atoms", "hopped_hydrogens", "stretched_bonds"]


def bridges(n_atoms: int, bonded: Iterable[tuple[int, int]]) -> list[tuple[int, int, list[int]]]:
    """The bonds (i, j) whose removal splits the bond graph, each with the atoms on j's
    side; oriented so that j's side is the smaller one (it is the side that moves)."""
    edges = sorted(bonded)
    cuts = (smaller_side(n_atoms, edges, i, j) for i, j in edges)
    return [(int(i), int(j), np.flatnonzero(mask).tolist()) for i, j, mask in
            (c for c in cuts if c is not None)]


def _shortest_by_pair(atoms: Atoms, d: np.ndarray) -> dict[tuple[int, int], float]:
    z = atoms.numbers
    out: dict[tuple[int, int], float] = {}
    for a, b in zip(*np.triu_indices(len(atoms), 1), strict=True):
        key = (min(z[a], z[b]), max(z[a], z[b]))
        out[key] = min(out.get(key, np.inf), float(d[a, b]))
    return out


def stretched_bonds(frames: Sequence[Atoms], bonded: Iterable[tuple[int, int]],
                    factors: Sequence[float], per_bond: int) -> list[Atoms]:
    """``per_bond`` frames per bridge bond (module docstring), spread evenly over
    ``frames`` (the initial sampling), each stretched to every one of ``factors`` x the
    sum of the covalent radii. ``info`` holds the factor (``al_stretch``) and the pair
    "i-j" (``al_bond``). Molecules only (no periodic cell)."""
    if not frames or not factors or per_bond < 1:
        return []
    cuts = bridges(len(frames[0]), bonded)
    picks = np.linspace(0, len(frames) - 1, max(len(cuts) * per_bond, 1)).round().astype(int)
    out = []
    for k, (i, j, side) in enumerate(cuts):
        for frame in (frames[p] for p in picks[k * per_bond:(k + 1) * per_bond]):
            shortest = _shortest_by_pair(frame, frame.get_all_distances())
            bond = frame.positions[j] - frame.positions[i]
            length = float(np.linalg.norm(bond))
            r_cov = covalent_radii[frame.numbers[i]] + covalent_radii[frame.numbers[j]]
            for factor in factors:
                atoms = Atoms(frame.numbers, frame.positions.copy())
                atoms.positions[side] += bond / length * (factor * r_cov - length)
                if _keeps_the_wall(atoms, shortest):
                    atoms.info = {AL_STRETCH: float(factor), AL_BOND: f"{i}-{j}"}
                    out.append(atoms)
    return out


def hopped_hydrogens(frames: Sequence[Atoms], bonded: Iterable[tuple[int, int]],
                     factors: Sequence[float], per_pair: int) -> list[Atoms]:
    """``per_pair`` frames per (hydrogen h bonded to x, atom y bonded to x), spread evenly
    over ``frames``, with h turned alone about x in the plane h-x-y, its distance to x kept,
    until |h - y| is every one of ``factors`` x the sum of their covalent radii (module
    docstring): the path of a 1,2-shift. A frame with a pair of elements closer than
    anywhere in ``frames`` is left out (the wall stays). ``info``: the factor
    (``al_stretch``) and "h>y" (``al_bond``). Molecules only."""
    if not frames or not factors or per_pair < 1:
        return []
    z = frames[0].numbers
    moves = hops(z, bonded)
    shortest: dict[tuple[int, int], float] = {}
    for frame in frames:
        for key, d in _shortest_by_pair(frame, frame.get_all_distances()).items():
            shortest[key] = min(shortest.get(key, np.inf), d)
    picks = np.linspace(0, len(frames) - 1, max(len(moves) * per_pair, 1)).round().astype(int)
    out = []
    for k, (h, x, y) in enumerate(moves):
        r_cov = covalent_radii[1] + covalent_radii[z[y]]
        for frame in (frames[p] for p in picks[k * per_pair:(k + 1) * per_pair]):
            for factor in factors:
                moved = turned_toward(frame.positions, h, x, y, factor * r_cov)
                if moved is None:
                    break
                atoms = Atoms(frame.numbers, frame.positions.copy())
                atoms.positions[h] = moved
                if _keeps_the_wall(atoms, shortest):
                    atoms.info = {AL_STRETCH: float(factor), AL_BOND: f"{h}>{y}"}
                    out.append(atoms)
    return out


def _keeps_the_wall(atoms: Atoms, shortest: dict[tuple[int, int], float]) -> bool:
    """No pair of elements closer than in ``shortest`` (the frame it was made from, or all
    of the initial sampling): the model's wall, fitted to the shortest distances in the
    data, stays where it was."""
    pairs = _shortest_by_pair(atoms, atoms.get_all_distances())
    return all(pairs[key] >= shortest[key] - 1e-9 for key in pairs)


def free_atoms(numbers: Iterable[int]) -> list[Atoms]:
    """One frame per element of ``numbers``: the atom alone, without a cell."""
    return [Atoms(numbers=[z], positions=[[0.0, 0.0, 0.0]]) for z in sorted(set(numbers))]
