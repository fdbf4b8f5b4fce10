"""The whole energy + forces (+ stress) computation, traced once and compiled by AOTInductor.

An eager call on a small molecule is a few thousand torch operations, each a few
microseconds of Python and dispatcher work, while its arithmetic takes microseconds in
all: the time is overhead, not FLOPs. :class:`CompiledResponse` removes it. For one
shape it traces the response the calculator needs (model forward, autograd backward and
the strain derivative, with the weights, radial tables and isolated-atom features as
constants) into a single graph of aten operations (``make_fx``), removes the terms the
backward recomputes (CSE), and compiles the graph with AOTInductor into one C++ program
(fused loops and a C++ wrapper: no Python between kernels). Later calls run it directly.

Shapes are bucketed so that MD does not recompile at every change of the neighbour
count: atoms are padded to ``bucket(n + 2)`` (buckets are m 2^k, m = 8..15: at most
12.5 % padding), and a program made for E edges takes up to ``bucket(1.25 E)`` edges
(``bucket(E)`` where E = n (n - 1) without periodic images: every pair is in); any
program of the atom bucket with room for a call's edges (and not over 4 times too large)
serves it. Padding is exact: two padding atoms sit 2 r_c + 1 A apart and every padding
edge joins them, so the radial functions (zero at and beyond r_c, with zero slope) give
padding edges no weight and no gradient; real atoms have no edge to padding atoms, and
the energy sums real atoms only.

Compiling needs a C++ compiler (Inductor's CPU backend) or a GPU (Triton) and takes
20-40 s per program, in a child process. Programs are cached on disk
(:func:`tfn_md.inference.programs.cache_dir`), keyed by a hash of the weights, configuration,
shapes, dtype, device, the model's source code and the build (:mod:`tfn_md.inference.programs`:
compiler, ISA, torch, Inductor options), so a later process loads one in about a second.
Every program is checked against the eager path on its first call. Any failure gives one
warning and the eager path.
"""

import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .. import keys
from ..graph import Graph
from . import programs
from .programs import cache_dir
from .response import compute_response

__all__ = ["CompiledResponse", "bucket", "cache_dir"]

COMPILE_AFTER = 20  # compile="auto": calls of one atom bucket before it is compiled
HEADROOM = 1.25  # a new program takes this many times the edges it was asked for
MAX_EDGES = 1 << 16  # larger graphs run eagerly (chunked kernel; compiled whole they
# would materialise [E, K, c] tensors and take minutes to compile)


def bucket(x: int, minimum: int = 16) -> int:
    """The smallest m 2^k >= max(x, minimum) with m in 8..15."""
    x = max(int(x), minimum)
    k = max(x.bit_length() - 4, 0)
    return -(-x // (1 << k)) << k


@dataclass(eq=False)
class _Inputs:
    """The padded inputs of one shape bucket (refreshed in place every call)."""

    numbers: Tensor
    species: Tensor
    positions: Tensor
    cell: Tensor
    edge_index: Tensor
    shifts: Tensor
    n: int = -1
    species_from: object = None
    pairs_from: object = None
    views: tuple = ()  # NumPy views of positions and cell (CPU): filled without torch

    @property
    def tensors(self) -> tuple:
        return (self.numbers, self.species, self.positions, self.cell, self.edge_index,
                self.shifts)


class CompiledResponse:
    """Compiled energy-only responses of ``model`` (an inference copy: frozen weights,
    radial tables set): ``programs[(padded atoms, stress)][edge capacity]``. ``isolated``:
    the model's isolated-atom features for energy-only calls [S, c, 1]. A model with a
    dipole head's programs also return its charges and atomic dipoles. A bucket is compiled at
    its ``after + 1``-th call (earlier calls return None: the caller runs eagerly; None:
    ``COMPILE_AFTER``)."""

    def __init__(self, model, isolated: Tensor, after: int | None = 0):
        self.model, self.isolated = model, isolated
        self.after = COMPILE_AFTER if after is None else after
        self.cutoff = float(model.cutoff)
        self.programs: dict = {}
        self.calls: Counter = Counter()
        self.failed = False

    def __call__(self, numbers: np.ndarray, species: Tensor, positions: np.ndarray,
                 cell: np.ndarray, pairs: tuple, stress: bool) -> dict | None:
        """Energies [n] (the energy is their sum), forces [n, 3] and (with ``stress``)
        dE/deps / V [1, 3, 3] for one structure, or None where it is not compiled (failed,
        too large, or not yet asked for often enough). The padded inputs of each bucket
        are kept and refreshed in place: edges only when ``pairs`` is another object than
        last time, species only when ``species`` is."""
        n, e = len(numbers), len(pairs[0])
        if self.failed or e > MAX_EDGES:
            return None
        group = (bucket(n + 2), stress)
        fits = [cap for cap in self.programs.get(group, {}) if e <= cap <= max(4 * e, 256)]
        if fits:
            program, inputs = self.programs[group][min(fits)]
        else:
            self.calls[group] += 1
            if self.calls[group] <= self.after:
                return None
            # a complete graph without periodic images (a small molecule within the
            # cutoff) cannot grow: no headroom, 10-25 % fewer padding edges to compute
            complete = e == n * (n - 1) and not pairs[2].any()
            inputs = self._inputs(group[0], bucket(e if complete else HEADROOM * e))
            self._fill(inputs, numbers, species, positions, cell, pairs)
            program = self._compile(inputs.tensors, stress)
            if program is None:
                return None
            self.programs.setdefault(group, {})[inputs.edge_index.shape[1]] = (program, inputs)
        self._fill(inputs, numbers, species, positions, cell, pairs)
        result = program(*inputs.tensors)  # None: it failed its check (this bucket: eager)
        if result is None:
            return None
        energies, forces, *rest = result
        out = {keys.ENERGIES: energies[:n], keys.FORCES: forces[:n]}
        if stress:
            out[keys.STRESS] = rest.pop(0)
        config = self.model.config
        if config.llpr:  # the energy uncertainty's readout inputs [n, c]
            out[keys.READOUT_INPUTS] = rest.pop(0)[:n]
        elif config.energy_heads > 1:  # energy heads: per atom [n_pad, K] -> [1, K]
            out[keys.ENERGY_HEADS] = rest.pop(0)[:n].sum(0, keepdim=True)
        if config.dipole:  # charges (neutral over real and padding atoms: the caller
            # corrects them over the real ones) [n] and atomic dipoles [n, 3]
            out[keys.CHARGES], out[keys.ATOM_DIPOLES] = rest[0][:n], rest[1][:n]
        return out

    @property
    def n_programs(self) -> int:
        return sum(len(by_edges) for by_edges in self.programs.values())

    def _inputs(self, n_pad: int, e_pad: int) -> "_Inputs":
        dtype, device = self.isolated.dtype, self.isolated.device
        inputs = _Inputs(
            numbers=torch.ones(n_pad, dtype=torch.int64, device=device),
            species=torch.zeros(n_pad, dtype=torch.int64, device=device),
            positions=torch.zeros(n_pad, 3, dtype=dtype, device=device),
            cell=torch.zeros(1, 3, 3, dtype=dtype, device=device),
            edge_index=torch.zeros(2, e_pad, dtype=torch.int64, device=device),
            shifts=torch.zeros(e_pad, 3, dtype=dtype, device=device))
        if device.type == "cpu":
            inputs.views = (inputs.positions.numpy(), inputs.cell.numpy())
        return inputs

    def _fill(self, inputs: "_Inputs", numbers, species, positions, cell, pairs) -> None:
        n = len(numbers)
        if inputs.n != n or inputs.species_from is not species:
            inputs.numbers[:n] = torch.from_numpy(numbers)
            inputs.numbers[n:] = int(numbers[0])  # padding atoms: any known element
            inputs.species[:n] = species
            inputs.species_from = species
        if inputs.n != n:
            inputs.positions.zero_()
            inputs.positions[n + 1, 0] = 2 * self.cutoff + 1.0  # two padding atoms
            inputs.n = n
            inputs.pairs_from = None
        if inputs.pairs_from is not pairs:
            i, j, s = pairs
            e = len(i)
            inputs.edge_index[0, :e] = torch.from_numpy(i)
            inputs.edge_index[1, :e] = torch.from_numpy(j)
            inputs.edge_index[0, e:], inputs.edge_index[1, e:] = n, n + 1  # padding edges
            inputs.shifts.zero_()
            inputs.shifts[:e] = torch.from_numpy(s)
            inputs.pairs_from = pairs
        if inputs.views:  # the same copy as below, a few microseconds less per call
            inputs.views[0][:n] = positions
            inputs.views[1][0] = cell
        else:
            inputs.positions[:n] = torch.from_numpy(positions)
            inputs.cell[0] = torch.from_numpy(cell)

    def _response(self, stress: bool):
        model, isolated = self.model, self.isolated

        def response(numbers, species, positions, cell, edge_index, shifts):
            graph = Graph(numbers=numbers, positions=positions, cell=cell,
                          batch=torch.zeros_like(numbers), edge_index=edge_index,
                          shifts=shifts)
            out = compute_response(model, graph, forces=True, stress=stress,
                                   energy_only=True, species=species, isolated=isolated)
            result = (out[keys.ENERGIES], out[keys.FORCES])
            result += (out[keys.STRESS],) if stress else ()
            if model.config.llpr:  # what the energy uncertainty needs, and no more
                result += (out[keys.READOUT_INPUTS],)
            elif keys.ENERGIES_HEADS in out:
                result += (out[keys.ENERGIES_HEADS],)
            if model.config.dipole:
                result += (out[keys.CHARGES], out[keys.ATOM_DIPOLES])
            return result

        return response

    def _compile(self, inputs: tuple, stress: bool):
        """The response for ``inputs``' shapes as one checked program
        (:func:`tfn_md.inference.programs.build`); None on failure (then never again)."""
        try:
            key = programs.program_key(self.model, self.isolated, inputs, ("response", stress))
            small = inputs[4].shape[1] <= programs.SMALL_PROGRAM  # edge_index [2, E]
            return programs.build(self._response(stress), inputs, key, small=small)
        except Exception as err:  # no C++ toolchain, unsafe cache, unsupported op, ...
            self.failed = True
            warnings.warn(f"compiling the TFN response failed ({type(err).__name__}: {err}); "
                          "using the eager path", RuntimeWarning, stacklevel=3)
            return None
