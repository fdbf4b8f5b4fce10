"""ASE calculator for TFN potentials (written in the manner of ase/calculators/lj.py).

    atoms.calc = TFNCalculator("ethanol-gfn2")          # shipped name
    atoms.calc = TFNCalculator("my.pt", device="cuda")  # checkpoint path
    atoms.calc = TFNCalculator(model, dtype=torch.float64)

Results (ASE units and names): ``energy`` = ``free_energy`` (eV), ``energies``
(eV per atom, summing to the energy), ``forces`` (eV/A), ``stress`` (eV/A^3,
Voigt xx yy zz yz xz xy; fully periodic cells only) and ``vectors`` (the
model's per-atom l = 1 readout [n_atoms, 3], read with
``atoms.calc.get_property("vectors", atoms)``). Potentials with a dipole head
(``TFNConfig.dipole``) add ASE's ``dipole`` (e*A, [3]; not for periodic systems) and
``charges`` (e, [n_atoms], summing to ``atoms.info["charge"]``, 0 by default), so
``atoms.get_dipole_moment()``, ``atoms.get_charges()`` and ``ase.vibrations.Infrared`` work;
other potentials raise ``PropertyNotImplementedError`` for them. Forces and stress come
from one autograd pass.

Uncertainty (models with ``energy_heads`` K > 1, a shallow ensemble; see
:mod:`tfn_md.inference.uncertainty`): ``energy``, ``forces`` and ``stress`` are the ensemble
means, and ``energy_spread`` (eV, the standard deviation of the K head energies) comes
with every calculation at no extra cost. ``forces_spread`` (eV/A, per atom
[n_atoms]: sqrt of the mean over heads of |F_k,i - F_i|^2) needs the K heads' forces, K
backward passes: it is computed only when asked for,
``atoms.calc.get_property("forces_spread", atoms)``, and that call runs the eager path
(several times the cost of a plain call). Single-head models have neither.

How each call is evaluated (compiled program, eager, compiled chunks, the ensemble) is
decided by the calculator's :class:`tfn_md.inference.engine.Engine` (``calc.engine``),
which keeps its own dtype and device, never touches torch's global state, and reuses
its neighbour search between calls while no atom has moved more than ``skin / 2``.
"""

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from .. import keys
from ..inference.engine import Engine

__all__ = ["TFNCalculator"]


class TFNCalculator(Calculator):
    """ASE Calculator around a :class:`tfn_md.TFN`.

    Args:
        potential: checkpoint path, shipped potential name, or a TFN model.
        device: torch device ("cpu", "cuda", ...).
        dtype: torch.float32 / torch.float64 (or their names); None keeps the model's.
        skin: Verlet skin in A for reusing the neighbour search in MD (0: search every call).
        compile: "auto" (default), True or False. Small and medium systems (up to
            ``tfn_md.inference.compiled.MAX_EDGES`` edges) run one compiled program for the whole
            energy + forces (+ stress) computation (:mod:`tfn_md.inference.compiled`: several times
            faster per call); larger ones run the edge kernel's chunks compiled. Compiling
            takes tens of seconds the first time, about a second once the program is in
            the disk cache. "auto" compiles after ``tfn_md.inference.compiled.COMPILE_AFTER`` eager
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
        keys.DIPOLE,
        keys.CHARGES,
        keys.ENERGY_SPREAD,
        keys.FORCES_SPREAD,
    ]
    default_parameters: dict = {}
    nolabel = True

    def __init__(self, potential, device: str = "cpu", dtype=None, skin: float = 0.5,
                 compile: bool | str = "auto", exact: bool = False, **kwargs):
        Calculator.__init__(self, **kwargs)
        self.engine = Engine(potential, device, dtype, skin, compile, exact)

    @property
    def model(self):
        """The calculator's copy of the model (frozen weights, its dtype and device)."""
        return self.engine.model

    @property
    def device(self):
        return self.engine.device

    @property
    def dtype(self):
        return self.engine.dtype

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
        # Calculator.calculate, less what costs in MD and is not needed here: a second
        # copy of atoms (get_property made one) and a working directory (none is used)
        if atoms is not None and (self.atoms is None or self.check_state(atoms)):
            self.atoms = atoms.copy()
        self.results = self.engine(self.atoms, properties)
