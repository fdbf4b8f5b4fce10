"""``run_md`` and ``tfn-md md``: every ensemble with the shipped ``cu-emt``, the log, clear
errors, and restarts of killed runs with no frame lost and none repeated."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ase import units
from ase.build import bulk, molecule
from ase.io import read, write

from tfn_md import TFNCalculator
from tfn_md.ase.ensembles import ENSEMBLES
from tfn_md.ase.md import log_path, read_restart, run_md


@pytest.fixture(scope="module")
def calc():
    """The shipped potential, one calculator for the module (loading it is the slow part)."""
    return TFNCalculator("cu-emt", dtype="float64", compile=False)


def cu(calc):
    """A rattled 32-atom fcc Cu cell with a fresh copy of the calculator's state."""
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True) * (2, 2, 2)
    atoms.rattle(0.02, seed=1)
    calc.reset()
    atoms.calc = calc
    return atoms


def logged_steps(path):
    return [int(row[0]) for row in np.atleast_2d(np.loadtxt(path))]


@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_every_ensemble_runs_and_logs(tmp_path, ensemble, calc):
    atoms = cu(calc)
    cell0 = atoms.cell.array.copy()
    npt = ensemble.startswith("npt")
    out = tmp_path / "md.traj"
    s = run_md(atoms, 20, 600.0, 2.0, trajectory=out, interval=5, ensemble=ensemble,
               pressure=1.0 if npt else None, pdamp=100.0, progress=False)
    frames = read(out, ":")
    assert [f.info["md_step"] for f in frames] == [0, 5, 10, 15, 20]
    assert [f.info["time_fs"] for f in frames] == [0.0, 10.0, 20.0, 30.0, 40.0]
    header = log_path(out).read_text().splitlines()[1].split()[1:]
    assert header[:5] == ["step", "time_ps", "T_K", "Epot_eV", "Etot_eV"]
    assert header[-5:] == ["P_GPa", "volume_A3", "a_A", "b_A", "c_A"]
    rows = np.loadtxt(log_path(out))
    assert rows.shape == (5, len(header))
    assert np.isfinite(rows).all()
    assert s["ensemble"] == ensemble and s["simulated_ps"] == pytest.approx(0.04)
    # the log's pressure is the calculator's (with the kinetic term) at the last frame
    p_last = -atoms.get_stress(include_ideal_gas=True)[:3].mean() / units.GPa
    assert rows[-1, header.index("P_GPa")] == pytest.approx(p_last, rel=1e-6)
    changed = not np.allclose(atoms.cell.array, cell0)
    assert changed == npt, "only the barostats change the cell"
    if ensemble == "npt-mtk":  # isotropic: the shape stays
        assert np.allclose(atoms.cell.array / atoms.cell.array[0, 0], cell0 / cell0[0, 0])
    if ensemble != "nvt-langevin":  # every other ensemble has a conserved energy
        assert "Econs_eV" in header
        assert abs(s["conserved_energy_drift_eV_per_atom"]) < 2e-3


def test_conserved_energy_of_the_thermostats_is_conserved(calc):
    """Nose-Hoover chain and MTK: the extended energy stays constant (a 2 fs step on Cu),
    while the thermostat moves the total energy."""
    for ensemble in ("nvt-nhc", "npt-mtk-full"):
        atoms = cu(calc)
        s = run_md(atoms, 60, 900.0, 2.0, interval=2, ensemble=ensemble, tdamp=20.0,
                   pdamp=200.0, progress=False)
        e_cons, e_tot = np.array(s["rows"]["Econs_eV"]), np.array(s["rows"]["Etot_eV"])
        assert np.ptp(e_cons) < 0.1 * np.ptp(e_tot), ensemble


def test_bad_settings_name_the_problem(calc):
    with pytest.raises(ValueError, match="periodic in all three"):
        run_md(molecule("H2O"), 1, ensemble="npt-mtk")
    with pytest.raises(ValueError, match="keeps the volume"):
        run_md(cu(calc), 1, ensemble="nvt-bussi", pressure=1.0)
    with pytest.raises(ValueError, match="not nvt-langevin"):
        run_md(cu(calc), 1, ensemble="nvt-nhc", friction=0.02)
    with pytest.raises(ValueError, match="0 is NVE"):
        run_md(cu(calc), 1, ensemble="nvt-langevin", friction=0.0)
    with pytest.raises(ValueError, match="unknown ensemble"):
        run_md(cu(calc), 1, ensemble="npt")
    with pytest.raises(ValueError, match="tdamp"):
        run_md(cu(calc), 1, ensemble="nvt-nhc", tdamp=0.0)


def test_friction_zero_is_still_nve(calc):
    s = run_md(cu(calc), 4, friction=0.0, interval=2, progress=False)
    assert s["ensemble"] == "nve"
    assert run_md(cu(calc), 2, progress=False)["ensemble"] == "nvt-langevin"


class Killed(BaseException):
    """Stands for a kill: nothing after it runs (not even ``except Exception``)."""


def kill_after(calc, monkeypatch, calls):
    """Make ``calc`` raise :class:`Killed` at its ``calls + 1``-th evaluation."""
    engine, count = calc.engine, {"n": 0}

    class Dying:
        def __getattr__(self, name):
            return getattr(engine, name)

        def __call__(self, atoms, properties):
            count["n"] += 1
            if count["n"] > calls:
                raise Killed
            return engine(atoms, properties)

    monkeypatch.setattr(calc, "engine", Dying())


@pytest.mark.parametrize("suffix", [".traj", ".xyz"])
def test_restart_of_a_killed_run_loses_and_repeats_nothing(tmp_path, suffix, calc,
                                                           monkeypatch):
    """NVE is deterministic: a run killed at step 13 and continued from its last frame
    (step 12) gives the uninterrupted run's frames, each once (to the precision of the
    file: extended XYZ keeps 8 decimals)."""
    full = tmp_path / f"full{suffix}"
    run_md(cu(calc), 20, 300.0, 2.0, friction=0.0, trajectory=full, interval=3, progress=False)
    out = tmp_path / f"md{suffix}"
    with monkeypatch.context() as patch, pytest.raises(Killed):
        kill_after(calc, patch, 18)  # one call per step (+ the first, + stress at frames)
        run_md(cu(calc), 20, 300.0, 2.0, friction=0.0, trajectory=out, interval=3,
               progress=False)
    before = read(out, ":")
    assert before[-1].info["md_step"] < 20
    with open(log_path(out), "a") as f:  # killed between a log row and its frame
        f.write(f"{before[-1].info['md_step'] + 3} 0 0 0 0 0 0 0 0 0 0\n")
    atoms, done = read_restart(out)
    assert done == before[-1].info["md_step"]
    calc.reset()
    atoms.calc = calc
    run_md(atoms, 20 - done, 300.0, 2.0, friction=0.0, trajectory=out, interval=3,
           start_step=done, progress=False)
    frames, reference = read(out, ":"), read(full, ":")
    assert [f.info["md_step"] for f in frames] == [0, 3, 6, 9, 12, 15, 18]
    assert logged_steps(log_path(out)) == [0, 3, 6, 9, 12, 15, 18]
    atol = 1e-10 if suffix == ".traj" else 1e-6
    for f, g in zip(frames, reference):
        np.testing.assert_allclose(f.positions, g.positions, atol=atol)
        np.testing.assert_allclose(f.get_momenta(), g.get_momenta(), atol=atol)
    np.testing.assert_allclose(np.loadtxt(log_path(out)), np.loadtxt(log_path(full)),
                               rtol=atol, atol=atol)


def test_restart_errors(tmp_path, calc):
    with pytest.raises(FileNotFoundError, match="no such trajectory"):
        read_restart(tmp_path / "none.traj")
    plain = tmp_path / "plain.xyz"
    write(plain, bulk("Cu"))
    with pytest.raises(ValueError, match="md_step"):
        read_restart(plain)
    (tmp_path / "junk.traj").write_bytes(b"not a trajectory")
    with pytest.raises(ValueError, match="not a readable trajectory"):
        read_restart(tmp_path / "junk.traj")
    with pytest.raises(ValueError, match="multiple of interval"):
        run_md(cu(calc), 5, interval=3, start_step=4)


def test_cli_restart_after_sigkill(tmp_path):
    """``tfn-md md`` killed with SIGKILL while it runs, then ``--restart``: every frame of
    the whole run once, the NPT cell carried over."""
    write(tmp_path / "cu.xyz", bulk("Cu", "fcc", a=3.59, cubic=True) * (2, 2, 2))
    args = [sys.executable, "-m", "tfn_md.cli", "md", "--potential", "cu-emt", "--ensemble",
            "npt-mtk", "--temperature", "300", "--pressure", "0", "--timestep", "2",
            "--pdamp", "100", "--steps", "160", "--interval", "4", "-o", "md.traj"]
    env = {**os.environ, "TFN_MD_COMPILE": "0"}
    proc = subprocess.Popen(args + ["--structure", "cu.xyz"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = tmp_path / "md.log"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) > 8:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read(tmp_path / "md.traj", -1)
    assert 0 < killed_at.info["md_step"] < 160
    done = subprocess.run(args + ["--restart", "md.traj"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    frames = read(tmp_path / "md.traj", ":")
    assert [f.info["md_step"] for f in frames] == list(range(0, 161, 4))
    assert logged_steps(log) == list(range(0, 161, 4))
    assert '"ensemble": "npt-mtk"' in done.stdout
    again = subprocess.run(args + ["--restart", "md.traj"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode != 0 and "already made 160" in again.stderr
