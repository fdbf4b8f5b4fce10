"""ASE calculator for TFN potentials (written in the manner of ase/calculators/lj.py).

    atoms.calc = TFNCalculator("ethanol-gfn2")          # shipped name
    atoms.calc = TFNCalculator("my.pt", device="cuda")  # checkpoint path
    atoms.calc = TFNCalculator(model, dtype=torch.float64)

Results (ASE units and names): ``energy`` = ``free_energy`` (eV), ``energies``
(eV per atom, summing to the energy), ``forces`` (eV/A), ``stress`` (eV/A^3,
Voigt xx yy zz yz xz xy; fully periodic cells only) and ``vectors`` (the
model's per-atom l = 1 readout [n_atoms, 3], read with
``atoms.calc.get_property("vectors", atoms)``). Forces and stress come from
one autograd pass.

Uncertainty (models with ``energy_heads`` K > 1, a shallow ensemble; see
:mod:`tfn_md.uncertainty`): ``energy``, ``forces`` and ``stress`` are the ensemble
means, and ``energy_spread`` (eV, the standard deviation of the K head energies) comes
with every calculation at no extra cost. ``forces_spread`` (eV/A, per atom
[n_atoms]: sqrt of the mean over heads of |F_k,i - F_i|^2) needs the K heads' forces, K
backward passes: it is computed only when asked for,
``atoms.calc.get_property("forces_spread", atoms)``, and that call runs the eager path
(several times the cost of a plain call). Single-head models have neither. The calculator keeps its own dtype and device and never
touches torch's global state. Between calls it reuses its neighbour search while no
atom has moved more than ``skin / 2`` (a Verlet list, :class:`tfn_md.graph.VerletList`);
the pairs it passes on are exactly those within the cutoff, so results do not depend
on the skin.
"""

import copy
import os

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from . import compiled, keys
from .graph import VerletList, atoms_to_graph
from .io import load_potential
from .model import TFN
from .response import compute_response, full_3x3_to_voigt
from .validation import check_calculator_args

__all__ = ["TFNCalculator"]


class TFNCalculator(Calculator):
    """ASE Calculator around a :class:`tfn_md.TFN`.

    Args:
        potential: checkpoint path, shipped potential name, or a TFN model.
        device: torch device ("cpu", "cuda", ...).
        dtype: torch.float32 / torch.float64 (or their names); None keeps the model's.
        skin: Verlet skin in A for reusing the neighbour search in MD (0: search every call).
        compile: "auto" (default), True or False. Small and medium systems (up to
            ``tfn_md.compiled.MAX_EDGES`` edges) run one compiled program for the whole
            energy + forces (+ stress) computation (:mod:`tfn_md.compiled`: several times
            faster per call); larger ones run the edge kernel's chunks compiled. Compiling
            takes tens of seconds the first time, about a second once the program is in
            the disk cache. "auto" compiles after ``tfn_md.compiled.COMPILE_AFTER`` eager
            calls of a shape bucket (MD, relaxations), so one-off calls never wait; True
            compiles at the first call; False never compiles. Where compiling fails (no
            C++ compiler) one warning is given and the eager path is used. The environment
            variable ``TFN_MD_COMPILE=0`` turns "auto" off.
        exact: evaluate the radial MLPs on every call. By default (False) they are
            tabulated once as cubic Hermite splines (:meth:`tfn_md.TFN.tabulate`: forces
            within about 1e-6 eV/A of the MLP's, exactly conservative, no MLP per edge);
            a model whose radial functions no grid reproduces keeps the MLPs.
    """

    implemented_properties = [
        keys.ENERGY,
        keys.FREE_ENERGY,
        keys.ENERGIES,
        keys.FORCES,
        keys.STRESS,
        keys.VECTORS,
        keys.ENERGY_SPREAD,
        keys.FORCES_SPREAD,
    ]
    default_parameters: dict = {}
    nolabel = True

    def __init__(self, potential, device: str = "cpu", dtype=None, skin: float = 0.5,
                 compile: bool | str = "auto", exact: bool = False, **kwargs):
        Calculator.__init__(self, **kwargs)
        device, dtype, skin = check_calculator_args(potential, device, dtype, skin, compile,
                                                    exact)
        model = potential if isinstance(potential, TFN) else load_potential(potential)
        self.device = torch.device(device)
        self.dtype = dtype or model.e0.dtype
        if isinstance(potential, TFN):
            model = copy.deepcopy(potential)  # converting it never changes the caller's model
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if compile == "auto" and os.environ.get("TFN_MD_COMPILE", "1") == "0":
            compile = False
        for conv in self.model.convolutions:
            conv.compile_kernels = compile is True
        if not exact:
            self.model.tabulate()
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

    def _species_of(self, numbers: np.ndarray) -> torch.Tensor:
        """Model species indices [n] of ``numbers`` (checked; reused while unchanged)."""
        known = self._species[0]
        if known is None or not np.array_equal(known, numbers):
            z = torch.as_tensor(numbers, dtype=torch.int64, device=self.device)
            self._species = (numbers.copy(), self.model.species_index(z))
        return self._species[1]

    def check_state(self, atoms, tol=1e-15):
        """What changed since the last calculation (ASE's contract), by exact comparison:
        several times cheaper than ASE's tolerance-based one, which matters in MD of small
        molecules; a change below ``tol`` merely counts as a change."""
        old = self.atoms
        if old is None:
            return all_changes[:]
        changes = [] if np.array_equal(old.cell.array, atoms.cell.array) else ["cell"]
        if not np.array_equal(old.pbc, atoms.pbc):
            changes.append("pbc")
        for name in all_changes:
            if name in ("cell", "pbc"):
                continue
            a, b = old.arrays.get(name), atoms.arrays.get(name)
            if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                changes.append(name)
        return changes

    def calculate(self, atoms=None, properties=(keys.ENERGY,), system_changes=all_changes):
        if atoms is None and self.atoms is None:
            raise ValueError("no atoms to calculate: attach the calculator (atoms.calc = calc) "
                             "or pass atoms, e.g. calc.get_potential_energy(atoms)")
        Calculator.calculate(self, atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(atoms.pbc.all())
        if keys.STRESS in properties and not periodic:
            raise PropertyNotImplementedError(
                f"stress needs a fully periodic cell; this system has pbc={atoms.pbc.tolist()}"
            )
        n = len(atoms)
        if n == 0:
            self.results = {
                keys.ENERGY: 0.0,
                keys.FREE_ENERGY: 0.0,
                keys.ENERGIES: np.zeros(0),
                keys.FORCES: np.zeros((0, 3)),
                keys.VECTORS: np.zeros((0, 3)),
            }
            if periodic:
                self.results[keys.STRESS] = np.zeros(6)
            if self.model.config.energy_heads > 1:
                self.results[keys.ENERGY_SPREAD] = 0.0
                self.results[keys.FORCES_SPREAD] = np.zeros(0)
            return
        heads = self.model.config.energy_heads > 1
        if not heads and (keys.ENERGY_SPREAD in properties or keys.FORCES_SPREAD in properties):
            raise PropertyNotImplementedError(
                "energy_spread and forces_spread need a model with several energy heads "
                "(TFNConfig.energy_heads > 1, a shallow ensemble); this one has one")
        pairs = None if self.neighbours is None else self.neighbours(atoms)
        energy_only = keys.VECTORS not in properties
        species = self._species_of(atoms.numbers)
        out = None
        if heads and keys.FORCES_SPREAD in properties:  # K backward passes, eager
            from .uncertainty import ensemble_response

            graph = atoms_to_graph(atoms, self.model.cutoff, self.dtype, self.device, pairs)
            out = ensemble_response(self.model, graph, stress=periodic, species=species,
                                    isolated=self._isolated[True])
            energy_only = True
        if out is None and self.compiled is not None and energy_only:
            out = self.compiled(atoms.numbers, species, atoms.positions, atoms.cell.array,
                                pairs, periodic)
        if out is None:
            large = pairs is not None and len(pairs[0]) > compiled.MAX_EDGES
            if self._large_calls is not None and large:
                self._large_calls += 1
                if self._large_calls > compiled.COMPILE_AFTER:  # MD of a large system
                    for conv in self.model.convolutions:
                        conv.compile_kernels = True
                    self._large_calls = None
            graph = atoms_to_graph(atoms, self.model.cutoff, self.dtype, self.device, pairs)
            out = compute_response(self.model, graph, forces=True, stress=periodic,
                                   energy_only=energy_only, species=species,
                                   isolated=self._isolated[energy_only])
        energy = float(out[keys.ENERGY].sum().item())
        self.results = {
            keys.ENERGY: energy,
            keys.FREE_ENERGY: energy,
            keys.ENERGIES: out[keys.ENERGIES].detach().cpu().double().numpy(),
            keys.FORCES: out[keys.FORCES].detach().cpu().double().numpy(),
        }
        if keys.VECTORS in out:
            self.results[keys.VECTORS] = out[keys.VECTORS].detach().cpu().double().numpy()
        if heads:  # population standard deviation of the K head energies [1, K]
            spread = out[keys.ENERGY_HEADS].detach().cpu().double().numpy().std()
            self.results[keys.ENERGY_SPREAD] = float(spread)
        if keys.FORCES_SPREAD in out:
            self.results[keys.FORCES_SPREAD] = (
                out[keys.FORCES_SPREAD].detach().cpu().double().numpy())
        if periodic:
            stress = full_3x3_to_voigt(out[keys.STRESS][0])
            self.results[keys.STRESS] = stress.detach().cpu().double().numpy()
