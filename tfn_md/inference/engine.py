"""How a potential is evaluated on one structure: the engine choice, in one place.

    engine = Engine("ethanol-gfn2")               # a name, a checkpoint path or a TFN
    results = engine(atoms, ["energy", "forces"])  # ASE names and units, numpy arrays

:class:`tfn_md.TFNCalculator` is this plus ASE's bookkeeping. Each call takes one route
(:meth:`Engine.route`):

* ``"ensemble"``: ``forces_spread`` asked of a model with K > 1 energy heads: one forward
  and K backward passes, eager (:func:`tfn_md.inference.uncertainty.ensemble_response`);
* ``"program"``: energy, forces (and stress) as one compiled program
  (:class:`tfn_md.inference.compiled.CompiledResponse`; graphs up to
  ``compiled.MAX_EDGES`` edges). Where the program is not ready (not yet asked for
  ``COMPILE_AFTER`` times, failed, too large) the call runs ``"eager"``;
* ``"eager"``: the model and autograd (:func:`tfn_md.inference.response.compute_response`),
  with the edge kernel's chunks compiled (:mod:`tfn_md.inference.chunks`) for graphs
  above ``compiled.MAX_EDGES`` edges once they were asked for ``COMPILE_AFTER`` times
  (``compile="auto"``) or from the start (``compile=True``).

The engine keeps its own dtype and device and never touches torch's global state. It
reuses its neighbour search while no atom has moved more than ``skin / 2`` (a Verlet
list, :class:`tfn_md.graph.VerletList`); the pairs it passes on are exactly those within
the cutoff, so results do not depend on the skin.
"""

import copy
import os
from typing import Any

import numpy as np
import torch
from ase.calculators.calculator import PropertyNotImplementedError

from .. import keys
from ..checkpoint import load_potential
from ..graph import VerletList, atoms_to_graph, total_charge
from ..model import TFN
from ..validation import check_bool, check_device, check_dtype, check_real, fail
from . import compiled
from .chunks import compiled_chunk
from .response import compute_response, full_3x3_to_voigt
from .uncertainty import ensemble_response

__all__ = ["Engine", "check_calculator_args", "compile_setting", "inference_model"]


def check_calculator_args(potential: Any, device: Any, dtype: Any, skin: Any, compile: Any,
                          exact: Any = False) -> tuple[torch.device, torch.dtype | None, float]:
    """Checked (device, dtype or None, skin) of an engine (``TFNCalculator``, ``TFNMLIAP``);
    the model is checked by ``load_potential`` or was built by ``TFN``."""
    if not isinstance(potential, (TFN, str, os.PathLike)):
        fail("potential", potential, "a checkpoint path, a shipped potential name or a TFN "
              "model", TypeError)
    checked_device = check_device("device", device)
    checked_dtype = None if dtype is None else check_dtype("dtype", dtype)
    checked_skin = check_real("skin", skin, 0.0, unit="Angstrom")
    if not (compile == "auto" and isinstance(compile, str)):
        check_bool("compile", compile, "True, False or 'auto'")
    check_bool("exact", exact)
    return checked_device, checked_dtype, checked_skin


def inference_model(model: TFN, device: torch.device, dtype: torch.dtype | None,
                    exact: bool) -> TFN:
    """``model`` ready for inference (in place): on ``device`` in ``dtype`` (None: its own),
    eval mode, frozen weights, radial functions tabulated unless ``exact``."""
    model = model.to(device=device, dtype=dtype or model.e0.dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if not exact:
        model.tabulate()
    return model


def compile_setting(compile: bool | str) -> bool | str:
    """``compile`` with "auto" turned off (False) by the environment's TFN_MD_COMPILE=0."""
    if compile == "auto" and os.environ.get("TFN_MD_COMPILE", "1") == "0":
        return False
    return compile


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A float64 NumPy copy of a result tensor (in MD of a small molecule every torch
    operation here is a noticeable part of a step: one conversion, no ``.double()``)."""
    return np.array(t.detach().cpu().numpy(), dtype=np.float64)


class Engine:
    """A potential ready to evaluate structures (arguments as :class:`tfn_md.TFNCalculator`).

    Attributes: ``model`` (an inference copy: frozen weights, radial tables unless
    ``exact``), ``device``, ``dtype``, ``neighbours`` (the Verlet list, None without a
    cutoff), ``compiled`` (the whole-program path, None where it cannot serve)."""

    def __init__(self, potential, device: str = "cpu", dtype=None, skin: float = 0.5,
                 compile: bool | str = "auto", exact: bool = False):
        device, dtype, skin = check_calculator_args(potential, device, dtype, skin, compile,
                                                    exact)
        if isinstance(potential, TFN):
            model = copy.deepcopy(potential)  # converting it never changes the caller's model
        else:
            model = load_potential(potential)
        self.device = torch.device(device)
        self.model = inference_model(model, self.device, dtype, exact)
        self.dtype = self.model.e0.dtype
        compile = compile_setting(compile)
        if compile is True:
            self._compile_chunks()
        self.heads = self.model.config.energy_heads > 1
        self.uncertain = self.heads or self.model.config.llpr  # has energy_spread
        self.dipole = self.model.config.dipole  # has charges and a dipole
        # sigma_E = sqrt(f^T C f) of one structure, in NumPy: a few microseconds where
        # torch's eager operations would add a tenth of a compiled call
        self._covariance = (self.model.readout_covariance.detach().cpu().double().numpy()
                            if self.model.config.llpr else None)
        # features of atoms without neighbours depend only on the weights: computed once
        per_species = not self.model.config.n_scalar_inputs
        with torch.no_grad():
            self._isolated = {e: self.model.isolated_features(e) if per_species else None
                              for e in (False, True)}
        cutoff = self.model.cutoff
        self.neighbours = None if cutoff is None else VerletList(cutoff, skin)
        self.compiled = None
        # the compiled program pads with edges beyond the cutoff: their radial functions
        # must vanish there (tables, or the Bessel basis with its envelope)
        vanishing = self.model.tabulated or self.model.config.basis == "bessel"
        if compile and per_species and cutoff is not None and vanishing:
            self.compiled = compiled.CompiledResponse(
                self.model, self._isolated[True], 0 if compile is True else None)
        self._species = (None, None)  # (atomic numbers, checked species indices)
        # "auto": eager calls of graphs too large for one program, until their chunk
        # kernels get compiled (None: not counting)
        self._large_calls = 0 if compile == "auto" else None

    def _compile_chunks(self) -> None:
        for conv in self.model.convolutions:
            conv.chunk_kernels = compiled_chunk

    def _species_of(self, numbers: np.ndarray) -> torch.Tensor:
        """Model species indices [n] of ``numbers`` (checked; reused while unchanged)."""
        known = self._species[0]
        if known is None or not np.array_equal(known, numbers):
            z = torch.as_tensor(numbers, dtype=torch.int64, device=self.device)
            self._species = (numbers.copy(), self.model.species_index(z))
        return self._species[1]

    def route(self, properties, n_edges: int) -> str:
        """The route of a call asking for ``properties`` of a graph of ``n_edges`` edges:
        "ensemble", "program" or "eager" (module docstring). Counts the eager calls of
        large graphs (``compile="auto"``) and compiles their chunks when they are many."""
        if self.heads and keys.FORCES_SPREAD in properties:
            return "ensemble"
        if (self.compiled is not None and keys.VECTORS not in properties
                and n_edges <= compiled.MAX_EDGES):
            return "program"
        if self._large_calls is not None and n_edges > compiled.MAX_EDGES:
            self._large_calls += 1
            if self._large_calls > compiled.COMPILE_AFTER:  # MD of a large system
                self._compile_chunks()
                self._large_calls = None
        return "eager"

    def __call__(self, atoms, properties=(keys.ENERGY,)) -> dict:
        """The results of ``atoms`` (ASE names and units: floats and float64 arrays):
        energy, free_energy, energies, forces, vectors where asked for, stress for fully
        periodic cells, energy_spread (and forces_spread where asked for) for models with
        several heads or a calibrated energy uncertainty."""
        periodic = bool(atoms.pbc.all())
        if keys.STRESS in properties and not periodic:
            raise PropertyNotImplementedError(
                f"stress needs a fully periodic cell; this system has pbc={atoms.pbc.tolist()}"
            )
        if not self.uncertain and keys.ENERGY_SPREAD in properties:
            raise PropertyNotImplementedError(
                "energy_spread needs a model with a calibrated energy uncertainty "
                "(tfn_md.train.uncertainty.calibrate_llpr) or several energy heads; this one "
                "has neither")
        if not self.heads and keys.FORCES_SPREAD in properties:
            raise PropertyNotImplementedError(
                "forces_spread needs a model with several energy heads "
                "(TFNConfig.energy_heads > 1, a shallow ensemble); this one has one")
        if (keys.DIPOLE in properties or keys.CHARGES in properties) and not self.dipole:
            raise PropertyNotImplementedError(
                "dipole and charges need a potential with a dipole head (TFNConfig.dipole, "
                "trained with [loss] vectors = { dipole = w }); this one has none")
        if keys.DIPOLE in properties and atoms.pbc.any():
            raise PropertyNotImplementedError(
                f"the dipole of a periodic system (pbc={atoms.pbc.tolist()}) is not defined; "
                "the charges are: atoms.get_charges()")
        if len(atoms) == 0:
            return self._without_pbc_dipole(self._empty(periodic), atoms)
        pairs = None if self.neighbours is None else self.neighbours(atoms)
        species = self._species_of(atoms.numbers)
        route = self.route(properties, 0 if pairs is None else len(pairs[0]))
        out = None
        if route == "ensemble":
            graph = atoms_to_graph(atoms, self.model.cutoff, self.dtype, self.device, pairs)
            out = ensemble_response(self.model, graph, stress=periodic, species=species,
                                    isolated=self._isolated[True])
        elif route == "program":
            out = self.compiled(atoms.numbers, species, atoms.positions, atoms.cell.array,
                                pairs, periodic)
            if out is not None and self.dipole:
                dipole = self._dipole(out, atoms)  # the program's charges, corrected
                out.pop(keys.CHARGES)
                return self._without_pbc_dipole({**self._results(out, periodic), **dipole},
                                                atoms)
        if out is None:
            energy_only = keys.VECTORS not in properties
            graph = atoms_to_graph(atoms, self.model.cutoff, self.dtype, self.device, pairs)
            out = compute_response(self.model, graph, forces=True, stress=periodic,
                                   energy_only=energy_only, species=species,
                                   isolated=self._isolated[energy_only])
        return self._without_pbc_dipole(self._results(out, periodic), atoms)

    @staticmethod
    def _without_pbc_dipole(results: dict, atoms) -> dict:
        """No dipole for a structure periodic in any direction (it is not defined there;
        asking for it raises)."""
        if atoms.pbc.any():
            results.pop(keys.DIPOLE, None)
        return results

    def _results(self, out: dict, periodic: bool) -> dict:
        """ASE results from a response's tensors; the energy is the sum of the atoms'
        energies (in float64)."""
        def array(key):
            return _numpy(out[key])

        energies = array(keys.ENERGIES)
        energy = float(energies.sum())
        results = {keys.ENERGY: energy, keys.FREE_ENERGY: energy,
                   keys.ENERGIES: energies, keys.FORCES: array(keys.FORCES)}
        for key in (keys.VECTORS, keys.FORCES_SPREAD, keys.CHARGES):
            if key in out:
                results[key] = array(key)
        if keys.DIPOLE in out:
            results[keys.DIPOLE] = array(keys.DIPOLE)[0]
        if keys.ENERGY_SPREAD in out:  # the ensemble route
            results[keys.ENERGY_SPREAD] = float(array(keys.ENERGY_SPREAD).sum())
        elif self._covariance is not None:  # inference.uncertainty.energy_spread, 1 structure
            f = array(keys.READOUT_INPUTS).sum(0)  # [c]
            results[keys.ENERGY_SPREAD] = float(np.sqrt(max(f @ self._covariance @ f, 0.0)))
        elif self.heads:  # population standard deviation of the K head energies [1, K]
            results[keys.ENERGY_SPREAD] = float(array(keys.ENERGY_HEADS).std())
        if periodic:
            results[keys.STRESS] = _numpy(full_3x3_to_voigt(out[keys.STRESS][0]))
        return results

    @staticmethod
    def _dipole(out: dict, atoms) -> dict:
        """Charges (e) and dipole (e*A) of one structure from a program's charges (neutral
        over real and padding atoms) and atomic dipoles: the correction of
        :func:`tfn_md.model.neutral_charges_and_dipole` over the real atoms, in NumPy (a
        few microseconds where torch's eager operations would add a tenth of a call)."""
        q = _numpy(out[keys.CHARGES])
        charge = total_charge(atoms)
        q -= (q.sum() - (0.0 if charge is None else float(charge[0]))) / len(q)
        p = _numpy(out[keys.ATOM_DIPOLES])
        return {keys.CHARGES: q, keys.DIPOLE: q @ atoms.positions + p.sum(0)}

    def _empty(self, periodic: bool) -> dict:
        """The results of a structure without atoms."""
        results = {keys.ENERGY: 0.0, keys.FREE_ENERGY: 0.0, keys.ENERGIES: np.zeros(0),
                   keys.FORCES: np.zeros((0, 3)), keys.VECTORS: np.zeros((0, 3))}
        if periodic:
            results[keys.STRESS] = np.zeros(6)
        if self.uncertain:
            results[keys.ENERGY_SPREAD] = 0.0
        if self.heads:
            results[keys.FORCES_SPREAD] = np.zeros(0)
        if self.dipole:
            results[keys.CHARGES] = np.zeros(0)
            results[keys.DIPOLE] = np.zeros(3)
        return results
