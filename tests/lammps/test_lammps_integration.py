"""tfn_md potentials inside a real LAMMPS (pair_style mliap unified), on 1 rank and on 2
ranks under mpiexec, against TFNCalculator in float64.

Runs where a LAMMPS with ML-IAP + Python is importable (examples/lammps/build_lammps.sh,
then ``eval "$(examples/lammps/build_lammps.sh --env)"``); skipped otherwise, unless
TFN_MD_REQUIRE_LAMMPS=1 (set by .ci/run), which turns the skip into a failure. LAMMPS
runs in child processes (tests/lammps/lammps_driver.py): it initialises MPI, which this process
must not carry into the other tests' forks and compilers.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from tfn_md import TFNCalculator
from tfn_md.lammps import export_lammps

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "lammps_driver.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TOL = 1e-10


def _lammps_ok() -> str | None:
    code = ("import lammps_driver; lmp = lammps_driver.start(); "
            "print(lmp.has_package('ML-IAP') and lmp.has_package('PYTHON'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True,
                         text=True, env=ENV)
    if out.returncode:
        lines = (out.stderr.strip() or "no output").splitlines()
        return f"no usable LAMMPS ({lines[-1]})"
    return None if out.stdout.strip().endswith("True") else "LAMMPS lacks ML-IAP or PYTHON"


_why_not = _lammps_ok()
if _why_not and os.environ.get("TFN_MD_REQUIRE_LAMMPS") == "1":
    raise RuntimeError(f"TFN_MD_REQUIRE_LAMMPS=1 but {_why_not}")
pytestmark = pytest.mark.skipif(_why_not is not None, reason=str(_why_not))

POTENTIALS = {"cu": "cu-emt", "ethanol": "ethanol-gfn2"}


def structures(name):
    if name == "ethanol":
        ethanol = molecule("CH3CH2OH")
        ethanol.rattle(0.05, seed=7)
        return [ethanol]
    frames = []
    for m in range(1, 7):  # 4 to 864 atoms
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((m, m, m))
        atoms.rattle(0.1, seed=m)
        atoms.wrap()
        frames.append(atoms)
    return frames


def run_driver(tmp_path, name, frames, ranks=1, *options, compile="auto"):
    model = tmp_path / f"{name}.mliap"
    if not model.exists():
        export_lammps(POTENTIALS[name], model, dtype="float64", compile=compile)
    ase.io.write(tmp_path / f"{name}.traj", frames)  # full precision (extxyz rounds)
    cmd = [sys.executable, str(DRIVER), str(model), str(tmp_path / f"{name}.traj"),
           str(tmp_path / "out.npz"), *options]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec")
        assert mpiexec, "no mpiexec on PATH (eval \"$(examples/lammps/build_lammps.sh --env)\")"
        cmd = [mpiexec, "-n", str(ranks), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return np.load(tmp_path / "out.npz")


def reference(name, atoms, potential=None):
    """TFNCalculator's results with the shipped potential of ``name`` (or ``potential``)."""
    atoms = atoms.copy()
    atoms.calc = TFNCalculator(potential or POTENTIALS[name], dtype=torch.float64, compile=False)
    pressure = None
    if atoms.pbc.all():  # LAMMPS' pxx pyy pzz pyz pxz pxy = -stress (no velocities)
        pressure = -atoms.get_stress()
    return (atoms.get_potential_energy(), atoms.get_potential_energies(), atoms.get_forces(),
            pressure)


def errors(name, frames, out, potential=None):
    """Per frame: |dE|, max |dE_i|, max |dF|, max |dP| / max |P| against TFNCalculator."""
    rows = []
    for k, atoms in enumerate(frames):
        energy, energies, forces, pressure = reference(name, atoms, potential)
        rows.append((len(atoms), abs(out[f"{k}_energy"] - energy),
                     np.abs(out[f"{k}_energies"] - energies).max(),
                     np.abs(out[f"{k}_forces"] - forces).max(),
                     0.0 if pressure is None else
                     np.abs(out[f"{k}_pressure"] - pressure).max() / np.abs(pressure).max()))
    return rows


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("name", ["cu", "ethanol"])
def test_matches_calculator(tmp_path, name, ranks):
    frames = structures(name)
    for n, de, dei, df, dp in errors(name, frames, run_driver(tmp_path, name, frames, ranks)):
        print(f"{name} {n} atoms, {ranks} rank(s): |dE| {de:.1e} eV, per-atom {dei:.1e} eV, "
              f"forces {df:.1e} eV/A, pressure {dp:.1e} relative")
        assert de < TOL and dei < TOL and df < TOL and dp < 1e-6, (n, de, dei, df, dp)


def test_file_exported_before_the_layout_change_still_runs(tmp_path):
    """tests/lammps/data/cu-emt-before-layout.mliap was written by tfn_md before the modules
    moved into subpackages (commit 5369118, class path tfn_md.lammps.TFNMLIAP): LAMMPS
    still loads it and gives the calculator's results with the model it holds (cu-emt as
    it was then: the shipped one has been re-made since)."""
    import pickle

    path = HERE / "data" / "cu-emt-before-layout.mliap"
    shutil.copy(path, tmp_path / "cu.mliap")
    with open(path, "rb") as fh:  # our own test file: unpickling it is what LAMMPS does
        model = pickle.load(fh).model
    frames = structures("cu")[:3]
    out = run_driver(tmp_path, "cu", frames, 1)
    for n, de, dei, df, dp in errors("cu", frames, out, model):
        print(f"file of 5369118: cu {n} atoms: |dE| {de:.1e} eV, forces {df:.1e} eV/A")
        assert de < TOL and dei < TOL and df < TOL and dp < 1e-6, (n, de, dei, df, dp)


def test_compiled_program_matches_calculator(tmp_path, monkeypatch):
    """compile=True: each step runs the rank's pruned graph as one compiled program
    (tfn_md.lammps.local_program), inside LAMMPS, on 2 ranks."""
    frames = structures("cu")[1:3]  # 32 and 108 atoms
    monkeypatch.setitem(ENV, "TFN_MD_CACHE", str(tmp_path / "compiled"))
    out = run_driver(tmp_path, "cu", frames, 2, compile=True)
    assert len(list((tmp_path / "compiled").glob("*.pt2"))) >= 2  # the programs ran
    for n, de, dei, df, dp in errors("cu", frames, out):
        print(f"compiled: cu {n} atoms, 2 ranks: |dE| {de:.1e} eV, per-atom {dei:.1e} eV, "
              f"forces {df:.1e} eV/A, pressure {dp:.1e} relative")
        assert de < TOL and dei < TOL and df < TOL and dp < 1e-6, (n, de, dei, df, dp)


def test_default_ghost_shell_is_not_enough(tmp_path):
    """With a comm cutoff of one cutoff + skin (too small for 2 layers) forces go wrong:
    the printed comm_modify line is needed."""
    frames = structures("cu")[2:3]
    out = run_driver(tmp_path, "cu", frames, 1, "--comm-cutoff", "7.0")
    assert np.abs(out["0_forces"] - reference("cu", frames[0])[2]).max() > 1e-3


def test_nve_follows_ase_velocity_verlet(tmp_path):
    """50 steps of NVE (1 fs) in LAMMPS and with ASE's VelocityVerlet from the same start
    stay on the same trajectory (unit constants differ in the 8th digit)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=11)
    atoms.wrap()
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
    start = atoms.copy()
    x_lammps = run_driver(tmp_path, "cu", [start], 1, "--nve", "50")["0_x"]
    atoms.calc = TFNCalculator("cu-emt", dtype=torch.float64, compile=False)
    VelocityVerlet(atoms, timestep=1.0 * units.fs).run(50)
    d = x_lammps - atoms.positions
    d -= np.round(d / np.diag(atoms.cell.array)) * np.diag(atoms.cell.array)  # LAMMPS wraps
    assert np.abs(d).max() < 1e-6
    assert np.abs(atoms.positions - start.positions).max() > 1e-2  # atoms did move


@pytest.mark.parametrize("name,potential,args", [
    ("in.cu", "cu-emt", ["-var", "steps", "5", "-var", "n", "2"]),
    ("in.ethanol", "ethanol-gfn2", ["-var", "steps", "20"]),
])
def test_example_inputs_run(tmp_path, name, potential, args):
    examples = HERE.parents[1] / "examples" / "lammps"
    export_lammps(potential, tmp_path / f"{potential}.mliap")
    shutil.copy(examples / "ethanol.data", tmp_path)
    out = subprocess.run([sys.executable, str(examples / "run_lammps.py"), str(examples / name),
                          "-log", "none", *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env=ENV)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Loop time" in out.stdout
