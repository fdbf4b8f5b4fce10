"""ASE calculator for TFN potentials (written in the manner of ase/calculators/lj.py).

    atoms.calc = TFNCalculator("ethanol-gfn2")          # shipped name
    atoms.calc = TFNCalculator("my.pt", device="cuda")  # checkpoint path
    atoms.calc = TFNCalculator(model, dtype=torch.float64)

Results (ASE units and names): ``energy`` = ``free_energy`` (eV), ``energies``
(eV per atom, summing to the energy), ``forces`` (eV/A), ``stress`` (eV/A^3,
Voigt xx yy zz yz xz xy; fully periodic cells only) and ``vectors`` (the
model's per-atom l = 1 readout [n_atoms, 3], read with
``atoms.calc.get_property("vectors", atoms)``). Forces and stress come from
one autograd pass. The calculator keeps its own dtype and device and never
touches torch's global state. Between calls it reuses its neighbour search while no
atom has moved more than ``skin / 2`` (a Verlet list, :class:`tfn_md.graph.VerletList`);
the pairs it passes on are exactly those within the cutoff, so results do not depend
on the skin.
"""

import copy

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from . import keys
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
        compile: compile the convolution's edge kernel with torch.compile (needs a C++
            compiler; the first call takes about a minute, then each layer keeps whichever
            of the compiled and eager kernels was faster on it). Off by default.
    """

    implemented_properties = [
        keys.ENERGY,
        keys.FREE_ENERGY,
        keys.ENERGIES,
        keys.FORCES,
        keys.STRESS,
        keys.VECTORS,
    ]
    default_parameters: dict = {}
    nolabel = True

    def __init__(self, potential, device: str = "cpu", dtype=None, skin: float = 0.5,
                 compile: bool = False, **kwargs):
        Calculator.__init__(self, **kwargs)
        device, dtype, skin = check_calculator_args(potential, device, dtype, skin, compile)
        model = potential if isinstance(potential, TFN) else load_potential(potential)
        self.device = torch.device(device)
        self.dtype = dtype or model.e0.dtype
        if isinstance(potential, TFN):
            model = copy.deepcopy(potential)  # converting it never changes the caller's model
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        for conv in self.model.convolutions:
            conv.compile_kernels = compile
        cutoff = self.model.cutoff
        self.neighbours = None if cutoff is None else VerletList(cutoff, skin)

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
            return
        pairs = None if self.neighbours is None else self.neighbours(atoms)
        graph = atoms_to_graph(atoms, self.model.cutoff, self.dtype, self.device, pairs)
        out = compute_response(self.model, graph, forces=True, stress=periodic,
                               energy_only=keys.VECTORS not in properties)
        energy = float(out[keys.ENERGY].sum().item())
        self.results = {
            keys.ENERGY: energy,
            keys.FREE_ENERGY: energy,
            keys.ENERGIES: out[keys.ENERGIES].detach().cpu().double().numpy(),
            keys.FORCES: out[keys.FORCES].detach().cpu().double().numpy(),
        }
        if keys.VECTORS in out:
            self.results[keys.VECTORS] = out[keys.VECTORS].detach().cpu().double().numpy()
        if periodic:
            stress = full_3x3_to_voigt(out[keys.STRESS][0])
            self.results[keys.STRESS] = stress.detach().cpu().double().numpy()
