"""``tfn-md learn`` (issue 12c): the loop end to end on Cu with ASE's EMT as the reference,
and a kill -9 in the middle of labelling, then a resume, losing and repeating no label."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from tfn_md.data import H5Dataset
from tfn_md.learn.loop import select

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
[system]
structure = "cu8.xyz"
[reference]
calculator = "{calculator}"
kwargs = {kwargs}
[initial]
temperatures = [300.0, 900.0]
n = 5
interval = 5
equilibration = 10
timestep = 2.0
[explore]
temperatures = [600.0, 1200.0]
steps = 30
interval = 5
timestep = 2.0
threshold = 0.001
stop = 100.0
max_select = 3
min_separation = 10
[budget]
max_labels = 6
max_iterations = 3
[model]
channels = 8
l_max = 1
layers = 1
cutoff = 3.6
radial_hidden = 16
energy_heads = 4
[optim]
lr = 5e-3
epochs = 2
retrain_epochs = 1
[run]
out = "out"
dtype = "float64"
"""


def _setup(tmp_path: Path, calculator: str, kwargs: str = "{}") -> Path:
    ase.io.write(tmp_path / "cu8.xyz", bulk("Cu", cubic=True) * (2, 1, 1))
    path = tmp_path / "learn.toml"
    path.write_text(CONFIG.format(calculator=calculator, kwargs=kwargs))
    return path


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "tfn_md.cli", "--threads", "1", "learn", str(config),
            "--quiet"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "TFN_MD_COMPILE": "0"}


def kill_while_labelling(command: list[str], cwd: Path, env: dict, log: Path) -> None:
    """Start ``tfn-md learn`` (a SlowEMT reference logging to ``log``, 1 s per label) and
    kill -9 it inside the computation of its second label."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline:  # wait for the first finished label
            if log.exists() and log.read_text().count("\n") >= 1:
                break
            if proc.poll() is not None:
                pytest.fail(f"learn ended before labelling: {proc.stderr.read()[-3000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("no label within 400 s")
        time.sleep(0.5)  # inside the next label's computation (1 s each)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def _labels(data: Path) -> list[tuple[int, int]]:
    with H5Dataset(data) as ds:
        mask = ds.mask("al_iteration")
        return list(zip(ds.column("al_iteration")[mask].tolist(),
                        ds.column("al_index")[mask].tolist()))


def test_select_by_spread_and_separation():
    spreads = np.array([0.5, 0.9, 0.8, 0.1, 0.7])
    trajs = np.array(["a", "a", "a", "b", "b"])
    steps = np.array([0, 10, 50, 100, 0])
    # 0.9 (a, 10); 0.8 (a, 50) is 40 steps away; 0.7 (b, 0); 0.5 (a, 0) is too close; 0.1 (b, 100)
    assert select(spreads, trajs, steps, limit=10, min_separation=20) == [1, 2, 4, 3]
    assert select(spreads, trajs, steps, limit=2, min_separation=20) == [1, 2]


@pytest.mark.slow  # about a minute; the kill -9 test below also runs the loop to its end
def test_learn_end_to_end_on_cu_with_emt(tmp_path: Path):
    config = _setup(tmp_path, "ase.calculators.emt:EMT")
    done = subprocess.run(_command(config), cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["stage"] == "done"
    out = tmp_path / "out"
    for name in ("final.pt", "report.md", "report.png", "data.h5", "state.json"):
        assert (out / name).is_file(), name
    labels = _labels(out / "data.h5")
    assert len(labels) == 6 and len(set(labels)) == 6  # the budget, no repeats
    with H5Dataset(out / "data.h5") as ds:
        assert len(ds) == 10 + 6  # initial 2 x 5 frames + 6 labels
        assert ds.mask("md_trajectory").all() and ds.mask("md_temperature").all()
    report = (out / "report.md").read_text()
    assert "label budget spent (6 of 6)" in report
    history = summary["history"]
    assert [h["selected"] for h in history[:2]] == [3, 3]
    assert history[-1]["n_data"] == 16


def test_kill9_while_labelling_then_resume_loses_and_repeats_nothing(tmp_path: Path):
    log = tmp_path / "labels.log"
    config = _setup(tmp_path, "tests.helpers:SlowEMT",
                    f'{{ log = "{log}", delay = 1.0 }}')
    kill_while_labelling(_command(config), tmp_path, _env(), log)
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert state["stage"] == "label"  # killed while labelling
    stored_before = _labels(tmp_path / "out" / "data.h5")
    assert 1 <= len(stored_before) < 3
    done = subprocess.run(_command(config), cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    labels = _labels(tmp_path / "out" / "data.h5")
    assert sorted(labels) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert set(stored_before) <= set(labels)
    computed = [tuple(line.split()) for line in log.read_text().splitlines()]
    keys = [(int(a), int(b)) for a, b, _ in computed]
    assert sorted(keys) == sorted(labels)  # every label computed exactly once
    # the stored labels are those of the stored positions, as EMT gives them
    from ase.calculators.emt import EMT

    hashes = {(int(a), int(b)): h for a, b, h in computed}
    with H5Dataset(tmp_path / "out" / "data.h5") as ds:
        for k in np.flatnonzero(ds.mask("al_iteration")):
            atoms = ds[int(k)]
            key = (atoms.info["al_iteration"], atoms.info["al_index"])
            assert hashlib.sha256(atoms.positions.tobytes()).hexdigest()[:16] == hashes[key]
            forces = atoms.get_forces()
            atoms.calc = EMT()
            assert np.allclose(atoms.get_forces(), forces, atol=1e-12)


def test_example_active_learning_quick(tmp_path: Path):
    pytest.importorskip("tblite")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "active_learning.py"),
                           "--quick", "--out", str(tmp_path / "m")], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "label budget spent (4 of 4)" in done.stdout
    assert "frames above the threshold (0.001 eV/A): 4 of 4" in done.stdout
    assert (tmp_path / "m" / "run" / "report.png").is_file()


def test_initial_data_from_an_earlier_loop_starts_a_fresh_count(tmp_path: Path):
    """A loop whose [initial] data is an earlier loop's data.h5 (a second round of
    learning) treats its frames as initial data: the earlier loop's bookkeeping (which
    iteration labelled a frame) must not make this loop skip its own iteration-0 labels."""
    import tomllib

    from ase.calculators.emt import EMT

    from tfn_md.data import DatasetWriter
    from tfn_md.learn.config import LearnConfig
    from tfn_md.learn.fields import AL_INDEX, AL_ITERATION
    from tfn_md.learn.loop import Learner

    earlier = tmp_path / "earlier.h5"
    frames = []
    for k in range(3):
        atoms = bulk("Cu", cubic=True) * (2, 1, 1)
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        atoms.get_forces()
        atoms.info.update({AL_ITERATION: 0, AL_INDEX: k})
        frames.append(atoms)
    with DatasetWriter(earlier, append=False) as writer:
        writer.extend(frames)
    with H5Dataset(earlier) as ds:
        assert AL_ITERATION in ds.fields  # the earlier loop's labels carry it
    config = _setup(tmp_path, "ase.calculators.emt:EMT")
    raw = tomllib.loads(config.read_text())
    raw["initial"] = {"data": str(earlier), "n": 0}
    cfg = LearnConfig.from_dict(raw, base_dir=tmp_path)
    learner = Learner(cfg, progress=False)
    learner.out.mkdir(parents=True)
    learner.initial()
    with H5Dataset(learner.data) as ds:
        assert len(ds) == 3 and AL_ITERATION not in ds.fields and AL_INDEX not in ds.fields
        assert ds.mask("forces").all()
    assert learner.labels_so_far() == 0


def test_close_contacts_of_atoms_not_bonded_at_the_start():
    from ase.build import molecule

    from tfn_md.learn.loop import bonded_pairs, close_contact

    start = molecule("CH3CH2OH")
    bonded = bonded_pairs(start)
    assert len(bonded) == 8  # C-C, C-O, O-H, 5 C-H
    assert close_contact(start, bonded, 1.2) is None  # bonds are not contacts
    moved = start.copy()
    h = [k for k, s in enumerate(start.get_chemical_symbols()) if s == "H"]
    pair = min(((a, b) for a in h for b in h if a < b), key=lambda p: start.get_distance(*p))
    moved.set_distance(*pair, 1.0, fix=0.5)
    assert close_contact(moved, bonded, 1.2) == pytest.approx(1.0)
    assert close_contact(moved, bonded, 0.9) is None
    stretched = start.copy()  # a bond longer than at the start is not a contact either
    stretched.set_distance(1, 2, 2.0, fix=0)
    assert close_contact(stretched, bonded, 1.2) is None


def test_new_bonds_of_atoms_not_bonded_at_the_start():
    """The hole ethanethiol's potential fell into at 1000 K: C0 and S2 (not bonded at the
    start, 1.5 x their covalent radii apart) closing a C-C-S ring at 1.81 A. The check
    flags it in units of the radii sum, not earlier, and never a bond of the start; a
    thermal bend of the C-C-S angle to 90 degrees is not a new bond."""
    from ase.build import molecule
    from ase.data import covalent_radii

    from tfn_md.learn.loop import bonded_pairs, new_bond

    start = molecule("CH3CH2SH")
    symbols = start.get_chemical_symbols()
    c0, c1, s = symbols.index("C"), symbols.index("C", symbols.index("C") + 1), symbols.index("S")
    bonded = bonded_pairs(start)
    assert (min(c0, s), max(c0, s)) not in bonded and (min(c1, s), max(c1, s)) in bonded
    radii = covalent_radii[6] + covalent_radii[16]
    assert start.get_distance(c0, s) / radii > 1.45
    assert new_bond(start, bonded, 1.1) is None  # its own bonds are not new
    bent = start.copy()
    bent.set_angle(c0, c1, s, 90.0, indices=[s])
    assert bent.get_distance(c0, s) / radii > 1.1 and new_bond(bent, bonded, 1.1) is None
    ring = start.copy()
    ring.set_distance(c0, s, 1.81, fix=0.5, indices=[c0, s])
    assert new_bond(ring, bonded, 1.1) == pytest.approx(1.81 / radii)
    assert new_bond(ring, bonded, 0.9) is None
    compressed = start.copy()  # a bond of the start shorter than usual: still its own
    compressed.set_distance(c1, s, 1.3, fix=0)
    assert new_bond(compressed, bonded, 1.1) is None


def test_several_starting_structures_and_a_contact_flag(tmp_path: Path):
    """[system] structure and [initial] data as lists: every exploration runs from each
    structure, the initial data are the files' frames. A contact distance of 3.5 A, under
    the second-neighbour distance of fcc Cu
    (3.61 A, not bonded at the start): hot MD brings such pairs closer, which flags the
    frame (labelled, with its distance) and ends the trajectory."""
    config = _setup(tmp_path, "ase.calculators.emt:EMT")
    other = bulk("Cu", cubic=True) * (1, 2, 1)
    other.rattle(0.02, seed=2)
    ase.io.write(tmp_path / "cu8-b.xyz", other)
    text = config.read_text().replace('structure = "cu8.xyz"',
                                      'structure = ["cu8.xyz", "cu8-b.xyz"]')
    text = text.replace("threshold = 0.001", "threshold = 50.0\ncontact = 3.5")
    text = text.replace("max_iterations = 3", "max_iterations = 1")
    # the initial data: two labelled files, copied, instead of reference MD
    from ase.calculators.emt import EMT

    from tfn_md.data import write_atoms

    for k, name in enumerate(("a.h5", "b.h5")):
        frames = []
        for s in range(4):
            atoms = (bulk("Cu", cubic=True) * (2, 1, 1)).copy()
            atoms.rattle(0.05, seed=10 * k + s)
            atoms.calc = EMT()
            atoms.get_stress()
            frames.append(atoms)
        write_atoms(tmp_path / name, frames, append=False)
    text = text.replace("n = 5\n", 'n = 0\ndata = ["a.h5", "b.h5"]\n')
    config.write_text(text)
    done = subprocess.run(_command(config), cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads(done.stdout)["history"][0]
    assert first["n_data"] == 8
    assert first["contacts"] >= 1 and first["selected"] >= 1
    with H5Dataset(tmp_path / "out" / "data.h5") as ds:
        labelled = ds.mask("al_iteration")
        sources = {json.loads(r)["source"] for r in ds.column("md_run")[labelled]}
        assert sources <= {"cu8.xyz", "cu8-b.xyz"}
        assert labelled.any() and (ds.column("al_contact")[labelled] < 3.5).any()
