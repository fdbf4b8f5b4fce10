"""A LAMMPS rank's energies and pair forces as one compiled program (see :mod:`tfn_md.lammps`).

A rank's pruned graph (:mod:`tfn_md.receptive`) holds its atoms in depth groups
d = 0..L (d = 0: the rank's own atoms) and its edges in groups by the depth of their
centre, d = 0..L-1; layer k reads the edge groups d <= L - k and writes the atom groups
d <= L - k. :class:`CompiledLocalEnergies` traces ``TFN.local_energies`` and its
gradient dE/dr_ij into one checked AOTInductor program (:func:`tfn_md.inference.programs.build`),
as :class:`tfn_md.inference.compiled.CompiledResponse` does for the calculator.

The group sizes change from step to step, so every group is padded to a capacity
(:func:`capacity` of ``HEADROOM`` times its size, plus one atom), and a
program serves every later step whose groups fit it. Padding is exact: the padding atoms
of a group follow its real atoms, the padding edges of edge group d are self-loops of the
first padding atom of atom group d with r_ij = (2 r_c + 1, 0, 0), beyond the cutoff, where
the radial functions and their slopes vanish (tables, or the Bessel basis with its
envelope): they carry no message and no gradient, and no real atom has an edge to a
padding atom. The energy sums real atoms only.
"""

import warnings

import numpy as np
import torch
from torch import Tensor

from ..inference import programs
from ..receptive import ReceptiveField

__all__ = ["MAX_EDGES", "CompiledLocalEnergies"]

MAX_EDGES = 1 << 18  # larger pruned graphs run eagerly (chunked edge kernel): whole, their
# [E, K, c] intermediates would take GBs
HEADROOM = 1.05  # a new program's groups hold this many times the sizes it was made for
WASTE = 1.5  # a program serves a step if its edges are at most this many times the step's


def capacity(x: float) -> int:
    """x rounded up to a multiple of 2^(bits - 6) (at most 1/32 more), at least 16."""
    x = max(int(np.ceil(x)), 16)
    step = 1 << max(x.bit_length() - 6, 0)
    return -(-x // step) * step


def group_sizes(prefix: list[int]) -> list[int]:
    """Sizes of the depth groups d = 0, 1, ... from a field's prefix sizes
    (``n_atoms`` or ``n_edges``: entry k covers the groups d <= len - 1 - k)."""
    prefix = list(prefix)[::-1]
    return [b - a for a, b in zip([0] + prefix[:-1], prefix)]


def placed(sizes, caps) -> tuple[np.ndarray, np.ndarray]:
    """Where the items of consecutive groups of ``sizes`` go when every group is padded
    to its capacity ``caps``: their positions [sum(sizes)] and the groups' starts."""
    starts = np.cumsum([0, *caps[:-1]])
    return np.arange(sum(sizes)) + np.repeat(starts - np.cumsum([0, *sizes[:-1]]), sizes), starts


class CompiledLocalEnergies:
    """Compiled ``(E_i of the rank's atoms, dE/dr_ij)`` of ``model`` (an inference copy:
    frozen weights, radial tables set) for pruned graphs of up to ``MAX_EDGES`` edges.
    ``isolated``: :meth:`TFN.isolated_features` with ``scalars_only``. A new program is
    compiled at the ``after + 1``-th call that no existing program fits (earlier calls
    return None: the caller runs eagerly)."""

    def __init__(self, model, isolated: Tensor, after: int = 0):
        self.model, self.isolated, self.after = model, isolated, after
        self.cutoff = float(model.cutoff)
        self.programs: dict = {}  # (atom capacities, edge capacities) -> program
        self.misses = 0
        self.failed = False

    @property
    def n_programs(self) -> int:
        return len(self.programs)

    def __call__(self, species: np.ndarray, vectors: np.ndarray,
                 field: ReceptiveField) -> tuple[np.ndarray, np.ndarray] | None:
        """Energies of the field's targets [n_targets] and dE/dr_ij [E_kept, 3] (float64)
        for the kept atoms' species indices [n_kept] and the kept edges' r_ij [E_kept, 3],
        both in the field's order; None where no program serves (failed, too large, not
        yet asked for often enough)."""
        n_edges = len(vectors)
        if self.failed or not n_edges or n_edges > MAX_EDGES:
            return None
        atoms, edges = group_sizes(field.n_atoms), group_sizes(field.n_edges)
        fits = [caps for caps in self.programs
                if all(n < c for n, c in zip(atoms, caps[0]))
                and all(e <= c for e, c in zip(edges, caps[1]))
                and sum(caps[1]) <= WASTE * n_edges + 256]
        if fits:
            caps = min(fits, key=lambda c: sum(c[1]))
        else:
            self.misses += 1
            if self.misses <= self.after:
                return None
            caps = (tuple(capacity(HEADROOM * n + 1) for n in atoms),
                    tuple(capacity(HEADROOM * e) for e in edges))
        inputs, atom_at, edge_at = self._inputs(caps, species, vectors, field, atoms, edges)
        if caps not in self.programs:
            program = self._compile(caps, inputs)
            if program is None:
                return None
            self.programs[caps] = program
        result = self.programs[caps](*inputs)  # None: it failed its check (then eager)
        if result is None:
            return None
        energies, grad = result
        n_targets = field.n_atoms[-1]
        return (energies[atom_at[:n_targets]].double().cpu().numpy(),
                grad[edge_at].double().cpu().numpy())

    def _inputs(self, caps, species, vectors, field, atoms, edges):
        """The padded program inputs (species [A], r_ij [E, 3], edge_index [2, E], real-atom
        mask [A_0]) and where the real atoms and edges went in them."""
        device, dtype = self.isolated.device, self.isolated.dtype
        atom_caps, edge_caps = np.array(caps[0]), np.array(caps[1])
        atom_at, atom_start = placed(atoms, atom_caps)
        edge_at, _ = placed(edges, edge_caps)
        padded_species = np.zeros(atom_caps.sum(), dtype=np.int64)
        padded_species[atom_at] = species
        padded_vectors = np.zeros((edge_caps.sum(), 3))
        padded_vectors[:, 0] = 2 * self.cutoff + 1.0
        padded_vectors[edge_at] = vectors
        first_pad = atom_start[: len(edges)] + np.array(atoms[: len(edges)])
        edge_index = np.repeat(np.repeat(first_pad, edge_caps)[None], 2, axis=0)
        edge_index[:, edge_at] = atom_at[field.edge_index.cpu().numpy()]
        mask = np.zeros(atom_caps[0])
        mask[: atoms[0]] = 1.0
        inputs = (torch.from_numpy(padded_species).to(device),
                  torch.from_numpy(padded_vectors).to(device, dtype),
                  torch.from_numpy(edge_index).to(device),
                  torch.from_numpy(mask).to(device, dtype))
        return inputs, atom_at, edge_at

    def _compile(self, caps, inputs):
        layers = len(caps[1])
        n_atoms = [int(sum(caps[0][: layers - k + 1])) for k in range(layers + 1)]
        n_edges = [int(sum(caps[1][: layers - k + 1])) for k in range(1, layers + 1)]
        model, isolated = self.model, self.isolated

        def response(species, vectors, edge_index, mask):
            with torch.enable_grad():
                v = vectors.detach().requires_grad_(True)
                field = ReceptiveField(None, None, edge_index, n_atoms, n_edges)
                energies = model.local_energies(species, v, field, isolated)
                (grad,) = torch.autograd.grad((energies * mask).sum(), v)
            return energies, grad

        try:
            key = programs.program_key(model, isolated, inputs, ("local", caps))
            return programs.build(response, inputs, key,
                                  small=sum(caps[1]) <= programs.SMALL_PROGRAM)
        except Exception as err:  # no C++ toolchain, unsafe cache, unsupported op, ...
            self.failed = True
            warnings.warn(f"compiling the TFN local energies failed ({type(err).__name__}: "
                          f"{err}); using the eager path", RuntimeWarning, stacklevel=3)
            return None
