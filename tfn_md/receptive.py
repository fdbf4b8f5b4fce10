"""The receptive field of some atoms' energies: which atoms and edges each layer needs.

With L message-passing layers, the energy of atom a depends on the atoms within L
edges of a. Where energies are wanted for a subset T of the atoms only (the atoms a
LAMMPS rank owns, among its ghost atoms), layer k (k = 1..L) needs outputs only at

    S_L = T,    S_{k-1} = S_k ∪ {j : (i <- j) an edge, i in S_k},

and reads only the edges whose centre is in S_k. With the depth d(a) = the fewest
edges from a to T (d = 0 on T), S_k = {a : d(a) <= L - k}. Ordering atoms by depth
(stably: T first, in its order) makes every S_k a prefix of the atoms, and ordering
edges by the depth of their centre makes every layer's edges a prefix of the edges,
so layer k is an ordinary convolution of the first ``n_atoms[k-1]`` atoms' features
onto the first ``n_atoms[k]`` atoms along the first ``n_edges[k-1]`` edges
(:meth:`tfn_md.TFN.local_energies`). Atoms and edges farther out are never touched.

For fcc Cu with r_c = 5 A and 256 owned atoms, the ghost shell of 2 r_c holds about
3400 atoms; layer 1 then runs on about 1100 of them and layer 2 on the 256 alone.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["ReceptiveField", "receptive_field"]


@dataclass
class ReceptiveField:
    """``atoms`` [n_kept]: original indices of the atoms any layer needs, ordered by depth
    (the targets first, in their order); ``edges`` [E_kept]: original indices of the edges
    any layer reads, ordered by the depth of their centre; ``edge_index`` [2, E_kept]: those
    edges in the new atom numbering; ``n_atoms`` [L + 1]: layer k's outputs are needed for
    the first n_atoms[k] atoms (k = 0: the embeddings; n_atoms[L] = number of targets);
    ``n_edges`` [L]: layer k reads the first n_edges[k - 1] edges."""

    atoms: Tensor
    edges: Tensor
    edge_index: Tensor
    n_atoms: list[int]
    n_edges: list[int]


def receptive_field(edge_index, n_atoms: int, n_targets: int, layers: int) -> ReceptiveField:
    """The receptive field of the energies of atoms 0..n_targets-1 after ``layers`` layers,
    in a graph of ``n_atoms`` atoms with edges ``edge_index`` [2, E] (a tensor, an array or
    a pair of arrays; row 0 the centre i, row 1 the neighbour j: messages flow j -> i).
    See the module docstring. Computed with numpy (O(E), no sort: one mask per depth); the result's
    tensors are on the CPU, or on ``edge_index``'s device when it is a tensor."""
    device = edge_index.device if isinstance(edge_index, Tensor) else torch.device("cpu")
    if isinstance(edge_index, Tensor):
        edge_index = edge_index.detach().cpu().numpy()
    centre, neighbour = (np.asarray(row) for row in edge_index)
    if centre.dtype.kind not in "iu":  # an empty float array (no pairs)
        centre, neighbour = centre.astype(np.int64), neighbour.astype(np.int64)
    depth = np.full(n_atoms, layers + 1, dtype=np.int8)
    depth[:n_targets] = 0
    for step in range(1, layers + 1):
        reached = neighbour[depth[centre] == step - 1]
        depth[reached[depth[reached] > step]] = step
    by_depth = [np.flatnonzero(depth == d) for d in range(layers + 1)]
    centre_depth = depth[centre]
    by_centre = [np.flatnonzero(centre_depth == d) for d in range(layers)]
    atoms, edges = np.concatenate(by_depth), np.concatenate(by_centre)
    new_index = np.full(n_atoms, -1, dtype=np.int64)
    new_index[atoms] = np.arange(len(atoms))
    kept_index = np.stack([new_index[centre[edges]], new_index[neighbour[edges]]])
    counts = [len(a) for a in by_depth]
    edge_counts = [len(e) for e in by_centre]
    n_kept = [sum(counts[: layers - k + 1]) for k in range(layers + 1)]
    n_read = [sum(edge_counts[: layers - k + 1]) for k in range(1, layers + 1)]
    return ReceptiveField(atoms=torch.from_numpy(atoms).to(device),
                          edges=torch.from_numpy(edges).to(device),
                          edge_index=torch.from_numpy(kept_index).to(device),
                          n_atoms=n_kept, n_edges=n_read)
