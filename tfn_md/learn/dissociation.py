"""Frames that teach a molecule's potential what its bonds cost: free atoms and stretched
bonds, labelled by the reference with the initial sampling.

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

from ..bonds import smaller_side
from .fields import AL_BOND, AL_STRETCH

__all__ = ["bridges", "free_atoms", "stretched_bonds"]


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
            base = frame.get_all_distances()
            shortest = _shortest_by_pair(frame, base)
            bond = frame.positions[j] - frame.positions[i]
            length = float(np.linalg.norm(bond))
            r_cov = covalent_radii[frame.numbers[i]] + covalent_radii[frame.numbers[j]]
            for factor in factors:
                atoms = Atoms(frame.numbers, frame.positions.copy())
                atoms.positions[side] += bond / length * (factor * r_cov - length)
                d = atoms.get_all_distances()
                pairs = _shortest_by_pair(atoms, d)
                if any(pairs[key] < shortest[key] - 1e-9 for key in pairs):
                    continue
                atoms.info = {AL_STRETCH: float(factor), AL_BOND: f"{i}-{j}"}
                out.append(atoms)
    return out


def free_atoms(numbers: Iterable[int]) -> list[Atoms]:
    """One frame per element of ``numbers``: the atom alone, without a cell."""
    return [Atoms(numbers=[z], positions=[[0.0, 0.0, 0.0]]) for z in sorted(set(numbers))]
