"""Ethanol in OpenMM with the shipped TFN potential: Langevin MD at 300 K, in vacuum or as
the ML region of a cluster of TIP3P waters (ML/MM, openmm-ml's mechanical embedding).

    python examples/openmm/ethanol_openmm.py --steps 2000               # ethanol alone
    python examples/openmm/ethanol_openmm.py --steps 2000 --via ase     # openmm-ml's ASE route
    python examples/openmm/ethanol_openmm.py --steps 500 --waters 20    # ML/MM

ML/MM: ethanol (TFN) among ``--waters`` TIP3P waters (OpenMM's tip3p.xml), no periodic box,
no cutoff. Mechanical embedding computes the ethanol-water interactions with the MM force
field, so ethanol needs MM charges and Lennard-Jones parameters (no bonded terms: the TFN
replaces them); OpenMM ships none for ethanol (GAFF/OpenFF come with openmmforcefields),
so ``ETHANOL_FFXML`` gives OPLS-AA's (Jorgensen et al. 1996), for illustration.
"""

import argparse
import io
import time

import numpy as np
import openmm
import torch
from ase.build import molecule
from openmm import app, unit
from openmmml import MLPotential

from tfn_md.engines.openmm import EV_IN_KJ_PER_MOL, NAME, create_system, topology_from_atoms

# nonbonded parameters only (charges in e, sigma in nm, epsilon in kJ/mol: OPLS-AA); the
# template's atoms are in the order of ase.build.molecule("CH3CH2OH")
ETHANOL_FFXML = """<ForceField>
 <AtomTypes>
  <Type name="eth-CT3" class="eth-CT3" element="C" mass="12.011"/>
  <Type name="eth-CT2" class="eth-CT2" element="C" mass="12.011"/>
  <Type name="eth-OH" class="eth-OH" element="O" mass="15.999"/>
  <Type name="eth-HO" class="eth-HO" element="H" mass="1.008"/>
  <Type name="eth-HC" class="eth-HC" element="H" mass="1.008"/>
 </AtomTypes>
 <Residues>
  <Residue name="ETH">
   <Atom name="C0" type="eth-CT3"/><Atom name="C1" type="eth-CT2"/>
   <Atom name="O2" type="eth-OH"/><Atom name="H3" type="eth-HO"/>
   <Atom name="H4" type="eth-HC"/><Atom name="H5" type="eth-HC"/>
   <Atom name="H6" type="eth-HC"/><Atom name="H7" type="eth-HC"/><Atom name="H8" type="eth-HC"/>
   <Bond atomName1="C0" atomName2="C1"/><Bond atomName1="C1" atomName2="O2"/>
   <Bond atomName1="O2" atomName2="H3"/><Bond atomName1="C1" atomName2="H4"/>
   <Bond atomName1="C1" atomName2="H5"/><Bond atomName1="C0" atomName2="H6"/>
   <Bond atomName1="C0" atomName2="H7"/><Bond atomName1="C0" atomName2="H8"/>
  </Residue>
 </Residues>
 <NonbondedForce coulomb14scale="0.833333" lj14scale="0.5">
  <Atom type="eth-CT3" charge="-0.18" sigma="0.35" epsilon="0.276144"/>
  <Atom type="eth-CT2" charge="0.145" sigma="0.35" epsilon="0.276144"/>
  <Atom type="eth-OH" charge="-0.683" sigma="0.312" epsilon="0.71128"/>
  <Atom type="eth-HO" charge="0.418" sigma="1.0" epsilon="0.0"/>
  <Atom type="eth-HC" charge="0.06" sigma="0.25" epsilon="0.12552"/>
 </NonbondedForce>
</ForceField>
"""


def ethanol_in_water(n_waters: int, seed: int = 0):
    """(topology, positions [n, 3] in nm, ML atom indices) of ethanol (residue ETH, atoms
    0-8) and the ``n_waters`` TIP3P waters (residues HOH, exact TIP3P geometry, random
    orientations) nearest to it on a 3.1 A grid, at least 2.6 A from every ethanol atom."""
    rng = np.random.default_rng(seed)
    eth = molecule("CH3CH2OH")
    topology = topology_from_atoms(eth, bonds=True, residue="ETH")
    grid = np.arange(-4, 5) * 3.1
    points = np.stack(np.meshgrid(grid, grid, grid), -1).reshape(-1, 3) + eth.positions.mean(0)
    clearance = np.linalg.norm(points[:, None] - eth.positions[None], axis=-1).min(1)
    points = points[clearance >= 2.6]
    points = points[np.argsort(np.linalg.norm(points - eth.positions.mean(0), axis=1))]
    if n_waters > len(points):
        raise ValueError(f"at most {len(points)} waters fit this grid")
    half = np.radians(104.52) / 2
    water = 0.9572 * np.array([[0, 0, 0], [np.sin(half), np.cos(half), 0],
                               [-np.sin(half), np.cos(half), 0]])
    positions = [eth.positions]
    chain = topology.addChain()
    for oxygen in points[:n_waters]:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # a random orthogonal matrix
        positions.append(oxygen + water @ q.T)
        res = topology.addResidue("HOH", chain)
        o = topology.addAtom("O", app.element.oxygen, res)
        for name in ("H1", "H2"):
            topology.addBond(o, topology.addAtom(name, app.element.hydrogen, res))
    return topology, np.concatenate(positions) / 10, list(range(len(eth)))


def mm_system(topology):
    """The MM System of ``topology`` (tip3p.xml + ``ETHANOL_FFXML``, no cutoff, rigid
    waters)."""
    forcefield = app.ForceField("tip3p.xml", io.StringIO(ETHANOL_FFXML))
    return forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, rigidWater=True)


def mixed_system(topology, ml_atoms, **settings):
    """The ML/MM System: TFN (``settings``: TFNCalculator's arguments) on ``ml_atoms``,
    the MM force field elsewhere and between the regions; the TFN in force group 1."""
    return MLPotential(NAME, **settings).createMixedSystem(
        topology, mm_system(topology), ml_atoms, forceGroup=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed MD steps (0.5 fs)")
    parser.add_argument("--waters", type=int, default=0, help="TIP3P waters around (ML/MM)")
    parser.add_argument("--via", choices=[NAME, "ase"], default=NAME,
                        help="this package's openmm-ml potential or openmm-ml's ASE route")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--potential", default="ethanol-gfn2")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own; 1 often suits a 9-atom "
                        "ML region best)")
    parser.add_argument("--quick", action="store_true",
                        help="tests: 10 steps, 10 minimizer iterations, no warm-up")
    args = parser.parse_args()
    if args.quick:
        args.steps = 10

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {"potential": args.potential, "dtype": args.dtype}
    if args.waters:
        if args.via != NAME:
            parser.error("--waters runs with --via tfn_md")
        topology, positions, ml_atoms = ethanol_in_water(args.waters)
        system = mixed_system(topology, ml_atoms, **settings)
    else:
        atoms = molecule("CH3CH2OH")
        system = create_system(atoms, via=args.via, **settings)
        positions = atoms.positions / 10
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                 0.5 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions * unit.nanometer)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=10 if args.quick else 200)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)

    n_dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3

    def report(step):
        state = context.getState(getEnergy=True)
        epot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        ekin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperature = 2 * ekin / (n_dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
            unit.kilojoule_per_mole / unit.kelvin))
        print(f"{step:7d} {step * 0.0005:8.4f} {epot / EV_IN_KJ_PER_MOL:12.5f} "
              f"{ekin / EV_IN_KJ_PER_MOL:9.5f} {temperature:7.1f}")

    what = f"ML/MM, {args.waters} TIP3P waters" if args.waters else "vacuum"
    print(f"ethanol ({what}), {args.potential} via {args.via!r}, {args.dtype}, "
          f"{system.getNumParticles()} particles, {torch.get_num_threads()} torch thread(s)")
    # warm-up, untimed: compiles the TFN's program (compile="auto": tens of seconds the
    # first time, seconds once in torch's disk cache)
    integrator.step(0 if args.quick else 50)
    print(f"{'step':>7} {'t (ps)':>8} {'Epot (eV)':>12} {'Ekin (eV)':>9} {'T (K)':>7}")
    report(0)
    start, interval = time.perf_counter(), max(1, args.steps // 10)
    for step in range(interval, args.steps + interval, interval):
        integrator.step(min(interval, args.steps - step + interval))
        report(min(step, args.steps))
    elapsed = time.perf_counter() - start
    print(f"{args.steps / elapsed:.0f} steps/s ({1e3 * elapsed / args.steps:.3f} ms/step, "
          "energies reported every tenth included)")


if __name__ == "__main__":
    main()
