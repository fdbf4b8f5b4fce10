"""A TFN potential in OpenMM, through openmm-ml.

    import openmm
    from tfn_md.engines.openmm import create_system

    system = create_system(atoms, "ethanol-gfn2", dtype="float64")    # an openmm.System
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005))  # 0.5 fs
    context.setPositions(atoms.positions / 10)                         # A -> nm

Importing this module registers the openmm-ml potential ``"tfn_md"`` (``pip install
"tfn_md[openmm]"``: OpenMM >= 8.1 and openmm-ml >= 1.2), so openmm-ml's own API works too,
ML/MM included::

    from openmmml import MLPotential
    import tfn_md.engines.openmm                  # registers "tfn_md"
    tfn = MLPotential("tfn_md", potential="ethanol-gfn2", dtype="float64")
    system = tfn.createSystem(topology)
    mixed = tfn.createMixedSystem(topology, mm_system, ml_atoms)   # mechanical embedding

Keyword arguments of ``MLPotential("tfn_md", ...)`` and :func:`create_system` are those of
:class:`tfn_md.TFNCalculator` (``potential``: a shipped name, a checkpoint path or a TFN;
``device``, ``dtype``, ``skin``, ``compile``, ``exact``).

Two routes, the same numbers (tests/engines/test_openmm.py checks both against
``TFNCalculator`` to 1e-5 eV and eV/A in float64):

* ``"tfn_md"`` (:func:`create_system`'s default): an ``openmm.PythonForce`` that calls the
  calculator's :class:`tfn_md.inference.engine.Engine` directly: a fifth to a quarter of
  the Python time per force call of ``"ase"`` (9 against 53 us, 8 against 35 us on a
  shared 2-core CPU, ``benchmarks/bench_openmm.py``), which for ethanol's 1 ms steps
  (compiled, float64) is 2-20 % per step, within that machine's noise. It tells
  openmm-ml's embeddings that the model is local (``getMLLongRange()`` False: periodic ML/MM
  needs no ``mlLongRange`` option) and pickles by its settings, so the force survives
  ``copy.deepcopy``, ``XmlSerializer`` and ``createMixedSystem(..., interpolate=True)``
  (the engine, with its compiled program, is rebuilt on unpickling).
* ``"ase"``: openmm-ml's own ASE potential around a ``TFNCalculator``
  (``MLPotential("ase").createSystem(topology, calculator=...)``, also a ``PythonForce``).

Units: OpenMM's positions are in nm, energies in kJ/mol and forces in kJ/mol/nm; the TFN
works in A and eV. Energies are converted with ASE's constants (``ase.units``), exactly as
openmm-ml's ASE potential does: 1 eV = ``EV_IN_KJ_PER_MOL`` kJ/mol (96.4853...), forces
by ``10 * EV_IN_KJ_PER_MOL`` (eV/A -> kJ/mol/nm). The force is evaluated in the
potential's dtype (``dtype``) on its ``device``, whatever the OpenMM platform.

Nothing here changes torch's global state.
"""

import ase.units
import numpy as np
from ase import Atoms

from ..ase.calculator import TFNCalculator
from ..inference.engine import Engine, check_calculator_args

try:
    import openmm
    from openmm import app, unit
    from openmmml import MLPotential
    from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory
except ImportError as err:  # the optional dependency
    raise ImportError(
        f"tfn_md.engines.openmm needs OpenMM and openmm-ml ({err}): pip install "
        "\"tfn_md[openmm]\"") from err

__all__ = ["EV_IN_KJ_PER_MOL", "NAME", "TFNComputation", "TFNPotentialImpl",
           "TFNPotentialImplFactory", "create_system", "topology_from_atoms"]

NAME = "tfn_md"  # the openmm-ml potential name registered by this module
EV_IN_KJ_PER_MOL = ase.units.mol / ase.units.kJ  # kJ/mol per eV (ASE's CODATA constants)


def topology_from_atoms(atoms: Atoms, bonds: bool = False, residue: str = "MOL"):
    """An ``openmm.app.Topology`` of ``atoms``: one chain, one residue named ``residue``,
    the atoms' elements in their order (names symbol + index: C0, C1, O2, ...). Fully
    periodic atoms give the topology their cell as box vectors (nm); partially periodic
    ones are refused (OpenMM knows no such boundary). ``bonds``: add a bond between atoms
    closer than 1.2 times the sum of their covalent radii (ASE's ``natural_cutoffs``; the
    TFN needs no bonds, an MM force field matching residue templates does)."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise ValueError(f"OpenMM needs all three directions periodic or none; these atoms "
                         f"have pbc={pbc.tolist()}")
    topology = app.Topology()
    res = topology.addResidue(residue, topology.addChain())
    members = [topology.addAtom(f"{s}{i}", app.Element.getByAtomicNumber(int(z)), res)
               for i, (s, z) in enumerate(zip(atoms.get_chemical_symbols(), atoms.numbers))]
    if bonds and len(atoms) > 1:
        from ase.neighborlist import natural_cutoffs, neighbor_list

        first, second = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.2))
        for i, j in zip(first, second):
            if i < j:
                topology.addBond(members[i], members[j])
    if pbc.all():
        topology.setPeriodicBoxVectors([openmm.Vec3(*row) for row in atoms.cell.array / 10]
                                       * unit.nanometer)
    return topology


class TFNComputation:
    """The computation of a ``PythonForce``: OpenMM State -> (energy in kJ/mol, forces in
    kJ/mol/nm [n, 3]) of the atoms ``numbers`` (the force's particles, in order) by a TFN
    :class:`Engine` built from ``settings`` (``TFNCalculator``'s arguments). Pickles as its
    settings; the engine is rebuilt on unpickling."""

    def __init__(self, numbers, periodic: bool, **settings):
        self.numbers = np.asarray(numbers, dtype=np.int64)
        self.periodic = bool(periodic)
        self.settings = settings
        self.engine = Engine(**settings)
        self.atoms = Atoms(numbers=self.numbers, pbc=self.periodic)

    def __reduce__(self):
        return _rebuild, (self.numbers, self.periodic, self.settings)

    def __call__(self, state):
        self.atoms.positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * 10
        if self.periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
            self.atoms.cell = box * 10
        results = self.engine(self.atoms, ("energy", "forces"))
        return (results["energy"] * EV_IN_KJ_PER_MOL,
                results["forces"] * (10 * EV_IN_KJ_PER_MOL))


def _rebuild(numbers, periodic, settings):
    return TFNComputation(numbers, periodic, **settings)


def _settings(potential, device="cpu", dtype=None, skin=0.5, compile="auto",
              exact=False) -> dict:
    """TFNCalculator's arguments, checked now (not at the first force evaluation)."""
    check_calculator_args(potential, device, dtype, skin, compile, exact)
    return {"potential": potential, "device": device, "dtype": dtype, "skin": skin,
            "compile": compile, "exact": exact}


class TFNPotentialImpl(MLPotentialImpl):
    """openmm-ml's implementation of the ``"tfn_md"`` potential: adds one ``PythonForce``
    (a :class:`TFNComputation`) over the ML atoms."""

    def __init__(self, **settings):
        self.settings = _settings(**settings)

    def addForces(self, topology, system, atoms, forceGroup, **args):
        included = list(topology.atoms())
        if atoms is not None:
            included = [included[i] for i in atoms]
        if any(atom.element is None for atom in included):
            raise ValueError("every ML atom of the Topology needs an element")
        periodic = topology.getPeriodicBoxVectors() is not None
        compute = TFNComputation([atom.element.atomic_number for atom in included],
                                 periodic, **self.settings)
        force = openmm.PythonForce(compute)
        force.setForceGroup(forceGroup)
        force.setUsesPeriodicBoundaryConditions(periodic)
        if atoms is not None:
            force.setParticles(list(atoms))
        system.addForce(force)

    def getMLLongRange(self):
        return False  # a TFN is local: nothing beyond its cutoff


class TFNPotentialImplFactory(MLPotentialImplFactory):
    """Creates :class:`TFNPotentialImpl` for ``MLPotential("tfn_md", **settings)``."""

    def createImpl(self, name, **args):
        return TFNPotentialImpl(**args)


MLPotential.registerImplFactory(NAME, TFNPotentialImplFactory())


def create_system(structure, potential, *, via: str = NAME, device: str = "cpu", dtype=None,
                  skin: float = 0.5, compile="auto", exact: bool = False,
                  removeCMMotion: bool = True):
    """An ``openmm.System`` whose only force (besides a ``CMMotionRemover`` unless
    ``removeCMMotion`` is False) is the TFN ``potential``, of ``structure``: ASE Atoms
    (:func:`topology_from_atoms`; set the Context's positions from ``atoms.positions / 10``,
    nm) or an ``openmm.app.Topology``. Particle masses are OpenMM's element masses (amu).

    ``via``: ``"tfn_md"`` (this module's PythonForce) or ``"ase"`` (openmm-ml's ASE
    potential around a ``TFNCalculator``); the other arguments are ``TFNCalculator``'s."""
    topology = structure if isinstance(structure, app.Topology) else topology_from_atoms(structure)
    settings = _settings(potential, device, dtype, skin, compile, exact)
    if via == NAME:
        return MLPotential(NAME, **settings).createSystem(topology, removeCMMotion=removeCMMotion)
    if via == "ase":
        return MLPotential("ase").createSystem(topology, removeCMMotion=removeCMMotion,
                                               calculator=TFNCalculator(**settings))
    raise ValueError(f"via must be {NAME!r} or 'ase', not {via!r}")
