"""A TFN potential as a torch-sim model: many systems evaluated in one call.

    import torch_sim as ts
    from tfn_md.engines.torchsim import TFNModel

    model = TFNModel("ethanol-gfn2")                 # a name, a checkpoint path or a TFN
    state = ts.io.atoms_to_state(molecules, model.device, model.dtype)
    out = model(state)   # {"energy": [n_systems], "forces": [n_atoms, 3]}
    final = ts.integrate(molecules, model, integrator=ts.nvt_langevin, n_steps=100,
                         temperature=300, timestep=0.0005)   # ps; torch-sim 0.3
    # (torch-sim >= 0.4, Python >= 3.12: integrator=ts.Integrator.nvt_langevin)

:class:`TFNModel` implements torch-sim's ``ModelInterface`` (``torch-sim-atomistic`` >= 0.3,
``pip install "tfn_md[torchsim]"``). A call takes a ``SimState`` (or its dict) of B systems,
atoms concatenated, and returns, in eV and Angstrom:

    energy  E_b = sum_{i in b} E_i                          [B]            eV
    forces  F_i = -dE_b/dx_i                                [n_atoms, 3]   eV/A
    stress  sigma_b = (1/V_b) dE_b/d(eps_b) at eps_b = 0    [B, 3, 3]      eV/A^3
            (x -> x (1 + eps), cell -> cell (1 + eps), eps symmetric; ASE's and
            torch-sim's sign: positive under tension; only with ``compute_stress``;
            zero for systems that are not periodic in all three directions: their
            volume is unbounded, V -> infinity)

with E_i the TFN's atomic energies (:mod:`tfn_md.model`; the mean over the energy heads of
shallow-ensemble potentials). All systems form one :class:`tfn_md.graph.Graph` (the
``batch`` of the graph is torch-sim's ``system_idx``), evaluated by one forward and one
autograd pass (:func:`tfn_md.inference.response.compute_response`): the same model
preparation and the same arithmetic as :class:`tfn_md.TFNCalculator`, system by system.

Neighbours (:class:`BatchVerletList`): per system, :func:`tfn_md.graph.neighbour_list`
(vesin on the CPU, float64, triclinic and small periodic cells, all periodic images within
the cutoff, the calculator's input checks), searched within ``cutoff + skin``, offset and
concatenated; the search is reused for the whole batch while no atom moved more than
``skin / 2``, and every call passes on exactly the pairs within the cutoff (distances
recomputed for all systems at once), so results do not depend on the skin. torch-sim's
own neighbour lists are not used: they would give the same pairs, without the skin and
the input checks (non-finite positions, overlapping atoms, singular or flat cells).

``compile`` ("auto", as the calculator): a batch of non-periodic systems is one
disconnected structure, so after ``tfn_md.inference.compiled.COMPILE_AFTER`` calls of
one atom-count bucket it runs the calculator's compiled whole-response program
(:class:`tfn_md.inference.compiled.CompiledResponse`; per-system energies are the sums of
its atomic energies). Periodic batches, and graphs over ``compiled.MAX_EDGES`` edges, run
eagerly.

Inputs are taken in the model's dtype and device (``TFNModel.dtype`` is the potential's
unless ``dtype`` is given; torch-sim's runners build their states in it); outputs are in
that dtype. ``state.pbc`` is one bool in torch-sim 0.3 (a per-direction [3] tensor in later
versions: both are read). Nothing here changes torch's global state.
"""

import copy
from typing import Any

import numpy as np
import torch
from ase import Atoms
from torch import Tensor

from .. import keys
from ..checkpoint import load_potential
from ..graph import MIN_DISTANCE, Graph, all_pairs, neighbour_list
from ..inference import compiled
from ..inference.engine import check_calculator_args, compile_setting, inference_model
from ..inference.response import compute_response
from ..model import TFN
from ..validation import check_bool

try:
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface
except ImportError as err:  # the optional dependency
    raise ImportError(
        f"tfn_md.engines.torchsim needs torch-sim ({err}): pip install \"tfn_md[torchsim]\" "
        "(the package torch-sim-atomistic >= 0.3)") from err

__all__ = ["BatchVerletList", "TFNModel"]

MIN_VOLUME = 1e-8  # A^3: a periodic system's cell below this is missing or singular


class TFNModel(ModelInterface):
    """A TFN potential as a torch-sim ``ModelInterface`` (module docstring).

    Args:
        potential: checkpoint path, shipped potential name (``"ethanol-gfn2"``,
            ``"cu-emt"``) or a :class:`tfn_md.TFN` (copied, never changed).
        device: torch device of the model; states are moved to it.
        dtype: torch.float32 / torch.float64 (or their names); None keeps the
            potential's (float32 for the shipped ones).
        compute_forces: return ``forces`` (default True).
        compute_stress: return ``stress`` (default False; zero for systems not periodic
            in all three directions).
            Both flags may be set later (``model.compute_stress = True``), as torch-sim's
            ``validate_model_outputs`` does.
        skin: Verlet skin in A for reusing the neighbour search (0: search every call).
        compile: "auto" (default), True or False, as :class:`tfn_md.TFNCalculator`'s
            (module docstring: non-periodic batches only); ``TFN_MD_COMPILE=0`` turns
            "auto" off.
        exact: evaluate the radial MLPs instead of their tables (as the calculator's).
    """

    def __init__(self, potential, *, device: Any = "cpu", dtype: Any = None,
                 compute_forces: bool = True, compute_stress: bool = False,
                 skin: float = 0.5, compile: bool | str = "auto", exact: bool = False):
        super().__init__()
        device, dtype, skin = check_calculator_args(potential, device, dtype, skin, compile,
                                                    exact)
        model = copy.deepcopy(potential) if isinstance(potential, TFN) else load_potential(
            potential)
        if model.config.n_scalar_inputs:
            raise ValueError("this potential needs per-atom scalar inputs "
                             f"({model.config.n_scalar_inputs}), which torch-sim states do "
                             "not carry")
        self._device = torch.device(device)
        self.model = inference_model(model, self._device, dtype, exact)
        self._dtype = self.model.e0.dtype
        self._compute_forces = check_bool("compute_forces", compute_forces)
        self._compute_stress = check_bool("compute_stress", compute_stress)
        self._memory_scales_with = "n_atoms_x_density"
        with torch.no_grad():  # isolated-atom features: they depend only on the weights
            self._isolated = self.model.isolated_features(scalars_only=True)
        self.neighbours = (None if self.model.cutoff is None else
                           BatchVerletList(self.model.cutoff, skin))
        self._species = (None, None)  # (atomic numbers, species indices) of the last call
        compile = compile_setting(compile)
        vanishing = self.model.tabulated or self.model.config.basis == "bessel"
        self.compiled = None  # the whole-response program (non-periodic batches)
        if compile and self.model.cutoff is not None and vanishing:
            self.compiled = compiled.CompiledResponse(self.model, self._isolated,
                                                      0 if compile is True else None)

    # torch-sim's validate_model_outputs switches these on where it can
    @ModelInterface.compute_stress.setter
    def compute_stress(self, value: bool) -> None:
        self._compute_stress = check_bool("compute_stress", value)

    @ModelInterface.compute_forces.setter
    def compute_forces(self, value: bool) -> None:
        self._compute_forces = check_bool("compute_forces", value)

    @property
    def cutoff(self) -> float | None:
        return self.model.cutoff

    def forward(self, state, **kwargs) -> dict[str, Tensor]:
        """``{"energy": [B], "forces": [n_atoms, 3], "stress": [B, 3, 3]}`` (eV, eV/A,
        eV/A^3; forces and stress where switched on) of a ``SimState`` or its dict
        (positions [n_atoms, 3] A, cell [B, 3, 3] column vectors, pbc, atomic_numbers
        [n_atoms], system_idx [n_atoms]). The state is not changed."""
        if isinstance(state, dict):
            masses = torch.ones_like(state["positions"][:, 0])
            state = ts.SimState(**{"masses": masses, **state})
        positions = state.positions.detach().to(self._device, self._dtype)
        cell = state.row_vector_cell.detach().to(self._device, self._dtype)  # [B, 3, 3] rows
        numbers = state.atomic_numbers.detach().to(self._device, torch.int64)
        system_idx = state.system_idx.detach().to(self._device, torch.int64)
        n_systems = cell.shape[0]
        pbc = _pbc(state.pbc)
        species = self._species_of(numbers)
        if pbc.all():  # (mixed pbc: the neighbour search checks the periodic vectors)
            volume = torch.linalg.det(cell).abs()
            bad = torch.nonzero(volume < MIN_VOLUME).flatten().tolist()
            if bad:
                raise ValueError(
                    f"system(s) {bad[:10]} are periodic (pbc={pbc.tolist()}) but their cell is "
                    "missing or singular (volume < 1e-8 A^3): give every periodic system its "
                    "cell, or use pbc=False")
        if len(numbers) == 0:
            return self._empty(n_systems)
        counts = torch.bincount(system_idx, minlength=n_systems).tolist()
        if len(counts) != n_systems or bool((system_idx[1:] < system_idx[:-1]).any()):
            raise ValueError(f"system_idx must be sorted, 0 .. {n_systems - 1} (one per cell); "
                             f"it names {len(counts)} systems")
        pos_np = positions.cpu().double().numpy()
        pairs = self._pairs(numbers.cpu().numpy(), pos_np, cell.cpu().double().numpy(), pbc,
                            counts)
        stress = self._compute_stress and bool(pbc.all())  # else zero (module docstring)
        program = (self.compiled is not None and self._compute_forces and not stress
                   and not pbc.any())
        out = None
        if program:
            out = self.compiled(numbers.cpu().numpy(), species, pos_np, np.zeros((3, 3)),
                                pairs, False)
            if out is not None:
                energy = out[keys.ENERGIES].new_zeros(n_systems).index_add_(
                    0, system_idx, out[keys.ENERGIES])
                out = {keys.ENERGY: energy, keys.FORCES: out[keys.FORCES]}
        if out is None:
            i, j, s = pairs
            graph = Graph(
                numbers=numbers, positions=positions, cell=cell, batch=system_idx,
                edge_index=torch.from_numpy(np.stack([i, j])).to(self._device),
                shifts=torch.from_numpy(s).to(self._device, self._dtype), n_graphs=n_systems)
            out = compute_response(self.model, graph, forces=self._compute_forces,
                                   stress=stress, energy_only=True, species=species,
                                   isolated=self._isolated)
        results = {keys.ENERGY: out[keys.ENERGY].detach()}
        if self._compute_forces:
            results[keys.FORCES] = out[keys.FORCES].detach()
        if self._compute_stress:
            results[keys.STRESS] = (out[keys.STRESS].detach() if stress else
                                    cell.new_zeros(n_systems, 3, 3))
        return results

    def _species_of(self, numbers: Tensor) -> Tensor:
        """Model species indices [n] (checked: unknown elements raise ValueError naming
        them); reused while the atomic numbers are unchanged."""
        known, species = self._species
        if known is None or known.shape != numbers.shape or not torch.equal(known, numbers):
            species = self.model.species_index(numbers)
            self._species = (numbers.clone(), species)
        return species

    def _pairs(self, numbers: np.ndarray, positions: np.ndarray, cells: np.ndarray,
               pbc: np.ndarray, counts: list[int]) -> tuple:
        """(i, j, S) of all systems, atom indices offset into the batch: the pairs within
        the cutoff (all ordered pairs, self included, for a potential without one)."""
        if self.neighbours is not None:
            return self.neighbours(numbers, positions, cells, pbc, counts)
        offsets = np.cumsum([0, *counts[:-1]])
        found = [tuple(a + o for a in all_pairs(n)[:2]) + (np.zeros((n * n, 3), np.int64),)
                 for n, o in zip(counts, offsets)]
        return tuple(np.concatenate(parts) for parts in zip(*found))

    def _empty(self, n_systems: int) -> dict[str, Tensor]:
        results = {keys.ENERGY: torch.zeros(n_systems, dtype=self._dtype, device=self._device)}
        if self._compute_forces:
            results[keys.FORCES] = torch.zeros(0, 3, dtype=self._dtype, device=self._device)
        if self._compute_stress:
            results[keys.STRESS] = torch.zeros(n_systems, 3, 3, dtype=self._dtype,
                                               device=self._device)
        return results


def _pbc(pbc) -> np.ndarray:
    """torch-sim's pbc (one bool in 0.3, [3] bools later) as a [3] bool array."""
    pbc = np.asarray(pbc.cpu() if isinstance(pbc, Tensor) else pbc, dtype=bool).reshape(-1)
    if pbc.size == 1:
        pbc = np.repeat(pbc, 3)
    if pbc.size != 3:
        raise ValueError(f"pbc must be one bool or three, got {pbc.tolist()}")
    return pbc


class BatchVerletList:
    """The pairs within ``cutoff`` of a batch of systems, as a
    :class:`tfn_md.graph.VerletList` gives them for each system: searched per system by
    :func:`tfn_md.graph.neighbour_list` (vesin, with its input checks) within
    ``cutoff + skin``, and reused for the whole batch while no atom has moved more than
    ``skin / 2`` since (and atomic numbers, system sizes, cells and pbc are unchanged).
    Each call returns exactly the pairs within ``cutoff`` (distances recomputed for all
    systems at once, O(n_edges)), atom indices offset into the batch, and the same tuple
    object as last time when the pairs have not changed. ``skin = 0`` searches every
    call. ``n_builds`` counts the searches (of the whole batch)."""

    def __init__(self, cutoff: float, skin: float = 0.5):
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.n_builds = 0
        self._ref = None  # (positions, numbers, cells, pbc, counts) of the last search
        self._pairs = None  # (i, j, S, system of each pair) within cutoff + skin
        self._kept = None  # (mask of the pairs within the cutoff, those pairs)

    def __call__(self, numbers: np.ndarray, positions: np.ndarray, cells: np.ndarray,
                 pbc: np.ndarray, counts: list[int]) -> tuple:
        """(i, j, S) [n_edges], [n_edges], [n_edges, 3] of atoms ``numbers`` [n] at
        ``positions`` [n, 3] (A), systems of ``counts`` atoms (in order) with cells
        ``cells`` [B, 3, 3] (rows) and periodicity ``pbc`` [3]."""
        if not np.isfinite(positions).all():
            self._search(numbers, positions, cells, pbc, counts, self.cutoff)  # raises
        if self.skin == 0 or self._stale(numbers, positions, cells, pbc, counts):
            self._pairs = self._search(numbers, positions, cells, pbc, counts,
                                       self.cutoff + self.skin)
            self._ref = (positions.copy(), numbers.copy(), cells.copy(), pbc.copy(),
                         list(counts))
            self._kept = None
            self.n_builds += 1
        i, j, s, system = self._pairs
        vec = positions[j] - positions[i]
        if pbc.any():
            vec += np.einsum("ek,ekl->el", s, cells[system])
        d = np.sqrt(np.einsum("ij,ij->i", vec, vec))
        if len(d) and d.min() < MIN_DISTANCE:
            k = int(np.argmin(d))
            first = sum(self._ref[4][:system[k]])  # the system's first atom in the batch
            raise ValueError(f"system {system[k]}: atoms {i[k] - first} and {j[k] - first} are "
                             f"{d[k]:.3g} A apart (closer than {MIN_DISTANCE} A): "
                             "overlapping atoms")
        keep = d < self.cutoff
        if self._kept is None or not np.array_equal(keep, self._kept[0]):
            self._kept = (keep, (i[keep], j[keep], s[keep]))
        return self._kept[1]

    def _stale(self, numbers, positions, cells, pbc, counts) -> bool:
        if self._ref is None:
            return True
        ref_positions, ref_numbers, ref_cells, ref_pbc, ref_counts = self._ref
        if not (ref_counts == list(counts) and np.array_equal(ref_numbers, numbers)
                and np.array_equal(ref_pbc, pbc) and np.array_equal(ref_cells, cells)):
            return True
        step = positions - ref_positions
        moved = np.einsum("ij,ij->i", step, step)
        return bool(moved.max(initial=0.0) > (0.5 * self.skin) ** 2)

    @staticmethod
    def _search(numbers, positions, cells, pbc, counts, cutoff) -> tuple:
        """(i, j, S, system) of every system's pairs within ``cutoff``, concatenated."""
        found, start = [], 0
        for k, n in enumerate(counts):
            stop = start + n
            atoms = Atoms(numbers=numbers[start:stop], positions=positions[start:stop],
                          cell=cells[k], pbc=pbc)
            try:
                i, j, s = neighbour_list(atoms, cutoff)
            except ValueError as err:
                raise ValueError(f"system {k}: {err}") from None
            found.append((i + start, j + start, s, np.full(len(i), k, dtype=np.int64)))
            start = stop
        return tuple(np.concatenate(parts) for parts in zip(*found))
