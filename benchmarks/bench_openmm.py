"""Per-step time of ethanol MD in OpenMM through the TFN against the same MD in ASE.

    python benchmarks/bench_openmm.py                         # 5 x 500 steps, compiled
    python benchmarks/bench_openmm.py --compile false --steps 100

Ethanol (ase.build.molecule("CH3CH2OH")), the shipped ``ethanol-gfn2`` potential, one
dtype (``--dtype``, default float64) and ``--threads`` torch threads (default 1) for every
row, NVE at 0.5 fs from the same start, in one process:

* ASE: ``VelocityVerlet`` with ``TFNCalculator``;
* OpenMM "ase": openmm-ml's ASE potential around a ``TFNCalculator``;
* OpenMM "tfn_md": this package's openmm-ml potential (a PythonForce calling the
  calculator's engine directly; :mod:`tfn_md.engines.openmm`).

OpenMM runs a ``VerletIntegrator`` on the Reference platform (double precision; for 9
atoms the CPU platform is no faster). Each row first runs 50 untimed steps (with
``--compile auto`` they compile the TFN's program: every row has its own), then the rows
take turns (in rotating order), ``--repeats`` times ``--steps`` steps each; the table gives the median and the
fastest repeat in ms per step. A second table times the Python around the TFN in each
OpenMM route: the force callback with the engine replaced by a stub that returns fixed
results (median of 2000 calls, alternating two geometries so the ASE calculator cannot
answer from its cache).
"""

import argparse
import statistics
import time
from functools import partial

import numpy as np
import openmm
import torch
from ase import Atoms
from ase.build import molecule
from ase.md.verlet import VelocityVerlet
from ase.units import fs, kB
from openmm import unit
from openmmml.models.asepotential import _computeASE

from tfn_md import TFNCalculator
from tfn_md.engines.openmm import NAME, TFNComputation, create_system

TIMESTEP_FS = 0.5
WARM = 50


def ase_runner(atoms, settings):
    atoms = atoms.copy()
    atoms.calc = TFNCalculator(**settings)
    dyn = VelocityVerlet(atoms, TIMESTEP_FS * fs)
    return dyn.run


def openmm_runner(atoms, settings, via):
    system = create_system(atoms, via=via, removeCMMotion=False, **settings)
    integrator = openmm.VerletIntegrator(TIMESTEP_FS * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions / 10 * unit.nanometer)
    # ASE's velocity unit is A per (ASE time unit); 1 A/fs = 100 nm/ps
    context.setVelocities(atoms.get_velocities() * fs * 100 * unit.nanometer / unit.picosecond)

    def run(steps):
        integrator.step(steps)
        return context  # keeps the Context alive with the integrator

    return run


def callback_overhead(atoms, settings, calls=2000):
    """Microseconds per force callback of each OpenMM route with a stub engine."""
    n = len(atoms)
    fixed = {"energy": -300.0, "free_energy": -300.0, "forces": np.zeros((n, 3)),
             "energies": np.zeros(n)}

    def stub(_atoms, _properties=None):
        return dict(fixed)

    system = openmm.System()
    for _ in range(n):
        system.addParticle(1.0)
    context = openmm.Context(system, openmm.VerletIntegrator(1.0),
                             openmm.Platform.getPlatformByName("Reference"))
    states = []
    for shift in (0.0, 0.01):
        context.setPositions((atoms.positions + shift) / 10 * unit.nanometer)
        states.append(context.getState(getPositions=True))
    calc = TFNCalculator(**settings)
    calc.engine = stub
    native = TFNComputation(atoms.numbers, False, **settings)
    native.engine = stub
    callbacks = {"ase": partial(_computeASE, atoms=Atoms(numbers=atoms.numbers, calculator=calc)),
                 NAME: native}
    out = {}
    for name, callback in callbacks.items():
        times = []
        for i in range(calls):
            start = time.perf_counter()
            callback(states[i % 2])
            times.append(time.perf_counter() - start)
        out[name] = 1e6 * statistics.median(times)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--compile", default="auto", choices=["auto", "true", "false"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    compile_ = {"auto": "auto", "true": True, "false": False}[args.compile]
    settings = {"potential": "ethanol-gfn2", "dtype": args.dtype, "compile": compile_}

    atoms = molecule("CH3CH2OH")
    rng = np.random.default_rng(0)  # 300 K, no net momentum
    velocities = rng.normal(size=(len(atoms), 3)) * np.sqrt(300 * kB / atoms.get_masses())[:, None]
    masses = atoms.get_masses()[:, None]
    atoms.set_velocities(velocities - (masses * velocities).sum(0) / masses.sum())
    runners = {"ASE VelocityVerlet + TFNCalculator": ase_runner(atoms, settings),
               "OpenMM via openmm-ml 'ase'": openmm_runner(atoms, settings, "ase"),
               f"OpenMM via '{NAME}'": openmm_runner(atoms, settings, NAME)}
    for run in runners.values():
        run(WARM)
    times = {name: [] for name in runners}
    names = list(runners)
    for repeat in range(args.repeats):
        for name in names[repeat % 3:] + names[:repeat % 3]:  # each row takes each turn
            run = runners[name]
            start = time.perf_counter()
            run(args.steps)
            times[name].append(1e3 * (time.perf_counter() - start) / args.steps)

    print(f"ethanol, ethanol-gfn2, {args.dtype}, {args.threads} torch thread(s), "
          f"compile={args.compile}, {args.repeats} x {args.steps} steps of {TIMESTEP_FS} fs")
    base = statistics.median(times["ASE VelocityVerlet + TFNCalculator"])
    print(f"| {'engine':36} | ms/step median | ms/step min | steps/s | vs ASE |")
    print(f"|{'-' * 38}|---------------:|------------:|--------:|-------:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name:36} | {median:14.3f} | {min(values):11.3f} | {1e3 / median:7.0f} | "
              f"{base / median:5.2f}x |")
    overhead = callback_overhead(atoms, settings)
    print("\nPython around the TFN per OpenMM force callback (engine stubbed):")
    print("| route | us/call |\n|-------|--------:|")
    for name, value in overhead.items():
        print(f"| {name} | {value:7.1f} |")


if __name__ == "__main__":
    main()
