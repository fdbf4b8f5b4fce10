"""``tfn-md learn`` without a file (issue 26): the template is the defaults and a valid
configuration; the command line builds it; a kill -9 and a resume of the one-command path
(on a template shrunk to a test's size); the progress line's time-left estimate."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import ase.io
import pytest
from ase.build import bulk

from tests.learn.test_learn import kill_while_labelling
from tfn_md.cli import main
from tfn_md.data import H5Dataset
from tfn_md.learn.config import LearnConfig
from tfn_md.learn.defaults import CRYSTAL, command_config, template_text
from tfn_md.learn.loop import Learner

ROOT = Path(__file__).resolve().parents[2]

# the template's numbers shrunk to a test's size (every other key stays the template's)
TINY = {
    "initial": {"temperatures": [300.0, 900.0], "n": 5, "interval": 5, "equilibration": 10,
                "timestep": 2.0},
    "test": {"temperatures": [300.0, 900.0], "trajectories": 2, "n": 3, "interval": 5,
             "equilibration": 10},
    "explore": {"temperatures": [600.0, 1200.0], "runs": 1, "steps": 30, "interval": 5,
                "timestep": 2.0, "threshold": 0.001, "stop": 100.0, "max_select": 3,
                "min_separation": 10},
    "budget": {"max_labels": 6, "max_iterations": 3},
    "model": {"channels": 8, "l_max": 1, "layers": 1, "cutoff": 3.6, "radial_hidden": 16,
              "energy_heads": 4},
    "optim": {"lr": 5e-3, "epochs": 2, "retrain_epochs": 1, "retrain_lr": 1e-3},
    "run": {"dtype": "float64"},
}


def _toml(raw: dict) -> str:
    """A TOML text of the template's shape (tables of scalars, lists and inline tables)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return repr(v)
    return "\n".join(f"[{name}]\n" + "\n".join(f"{k} = {value(v)}" for k, v in table.items())
                     + "\n" for name, table in raw.items())


def test_template_is_the_molecule_defaults_and_a_valid_configuration(tmp_path, capsys):
    assert main(["learn", "--template"]) == 0
    printed = capsys.readouterr().out
    assert printed == template_text()
    (tmp_path / "my.toml").write_text(printed)
    from tfn_md.learn.config import load_learn_config

    from_file = load_learn_config(tmp_path / "my.toml").to_dict()
    raw = command_config(molecule="CH3CH2OH", method="GFN2-xTB", out=str(tmp_path / "learn"))
    from_command = LearnConfig.from_dict(raw).to_dict()
    from_file["run"]["out"] = from_command["run"]["out"]
    assert from_file == from_command  # the template is exactly what the command runs
    for key in ("[test]", "retrain_lr", "minutes", "contact", "threshold rule"):
        assert key in printed, key


def test_command_line_picks_crystal_defaults_for_periodic_structures(tmp_path):
    ase.io.write(tmp_path / "cu.xyz", bulk("Cu", cubic=True))
    raw = command_config(structures=[str(tmp_path / "cu.xyz")],
                         calculator="ase.calculators.emt:EMT", budget_minutes=30)
    cfg = LearnConfig.from_dict(raw)
    assert cfg.explore.temperatures == CRYSTAL["explore"]["temperatures"]
    assert cfg.loss["stress"] == CRYSTAL["loss"]["stress"]
    assert cfg.budget.minutes == 30 and cfg.run.out == "learn-cu"
    assert cfg.system.structure == str(tmp_path / "cu.xyz")
    with pytest.raises(ValueError, match="exactly one of --method"):
        command_config(molecule="CH4")
    with pytest.raises(ValueError, match="unknown molecule 'NOPE'"):
        command_config(molecule="NOPE", method="GFN2-xTB")
    with pytest.raises(SystemExit):  # argparse: a file and options together
        main(["learn", "my.toml", "--molecule", "CH4"])


def test_time_left_appears_and_decreases(tmp_path):
    raw = command_config(molecule="CH4", method="GFN2-xTB", out=str(tmp_path / "o"))
    raw["budget"]["max_iterations"] = 4
    learner = Learner(LearnConfig.from_dict(raw), progress=False)
    state = {"iteration": 0, "stage": "explore", "final": False,
             "history": [{"iteration": 0, "seconds": {"train": 100.0}}]}
    # the default budget (55 min) is the only estimate before an iteration has finished
    assert learner.time_left(state, 100.0) == 55 * 60.0 - 100.0
    learner.cfg.budget.minutes = 0  # no budget: the iterations' mean alone
    assert learner.time_left(state, 100.0) is None  # no iteration finished yet
    lefts = []
    for i in range(1, 4):  # each iteration: 30 s explore, 10 s label, 20 s retrain
        state["history"][i - 1]["seconds"].update(explore=30.0, label=10.0)
        state["history"].append({"iteration": i, "seconds": {"train": 20.0}})
        state["iteration"], state["stage"] = i, "explore"
        lefts.append(learner.time_left(state, 100.0 + 60.0 * i))
        state["history"][i]["seconds"]["explore"] = 30.0
        state["stage"] = "label"
        lefts.append(learner.time_left(state, 130.0 + 60.0 * i))
    assert lefts == [180.0, 150.0, 120.0, 90.0, 60.0, 30.0]
    learner.cfg.budget.minutes = 4.0  # 240 s: the budget caps the estimate
    assert learner.time_left(state, 220.0) == 20.0


def _command(out: str) -> list[str]:
    code = ("import sys; from pathlib import Path; import tfn_md.learn.defaults as d; "
            "d.TEMPLATE = Path('tiny.toml'); d.CRYSTAL = {}; from tfn_md.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code, "--threads", "1", "learn", "--structure", "cu8.xyz",
            "--calculator", "tests.helpers:SlowEMT", "-o", out]


def _lefts(stderr: str) -> list[float]:
    return [float(x) * (60.0 if unit == "min" else 1.0)
            for x, unit in re.findall(r"~([\d.]+) (s|min) left", stderr)]


def test_one_command_kill9_while_labelling_then_resume(tmp_path: Path):
    raw = tomllib.loads(template_text())
    for section, values in TINY.items():
        raw[section].update(values)
    (tmp_path / "tiny.toml").write_text(_toml(raw))
    ase.io.write(tmp_path / "cu8.xyz", bulk("Cu", cubic=True) * (2, 1, 1))
    log = tmp_path / "labels.log"
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TFN_MD_COMPILE": "0",
           "SLOW_EMT_LOG": str(log), "SLOW_EMT_DELAY": "1.0", "PATH": "/usr/bin:/bin"}
    kill_while_labelling(_command("out"), tmp_path, env, log)
    out = tmp_path / "out"
    assert json.loads((out / "state.json").read_text())["stage"] == "label"
    done = subprocess.run(_command("out"), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    with H5Dataset(out / "data.h5") as ds:
        mask = ds.mask("al_iteration")
        labels = list(zip(ds.column("al_iteration")[mask].tolist(),
                          ds.column("al_index")[mask].tolist()))
    assert sorted(labels) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    computed = [tuple(map(int, line.split()[:2])) for line in log.read_text().splitlines()]
    assert sorted(computed) == sorted(labels)  # every label computed exactly once
    with H5Dataset(out / "test.h5") as test, H5Dataset(out / "valid.h5") as valid:
        assert len(test) == 2 * 2 * 3 and len(valid) == 2 * 2  # never trained on
        assert len(set(test.column("md_trajectory"))) == 4
    report = (out / "report.md").read_text()
    lines = report.splitlines()  # the iterations' table, then the independent one
    first = lines.index("|---|---|---|---|---|---|---|") + 1
    assert [line.split(" | ")[0] for line in lines[first:first + 3]] == ["| 0", "| 1", "| 2"]
    assert "Independent reference trajectories" in report and "offset shift" in report
    assert report.index("Independent reference") > report.index(lines[first + 2])
    history = json.loads((out / "state.json").read_text())["history"]
    assert all("independent" in h for h in history)
    # the final potential (iteration 2, after the label budget) explored, nothing labelled
    assert history[2]["check"] == "done" and history[2]["checked"] > 0
    assert "The final potential's own exploration (iteration 2, not labelled)" in report
    offsets = [h["independent"]["energy_offset_meV_per_atom"] for h in history]
    assert len(offsets) == 3 and all(abs(x) < 1e6 for x in offsets)
    lefts = _lefts(done.stderr)
    assert lefts and lefts[-1] == 0.0 and lefts[0] > 0.0 and lefts == sorted(lefts)[::-1]
    # the same command again: the run is done, nothing is recomputed
    again = subprocess.run(_command("out"), cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300, check=False)
    assert again.returncode == 0 and log.read_text().count("\n") == len(computed)
    # another configuration in the same folder is refused, naming what differs
    other = _command("out")
    other[other.index("tests.helpers:SlowEMT")] = "ase.calculators.emt:EMT"
    refused = subprocess.run(other, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300, check=False)
    assert refused.returncode == 1 and "reference.calculator" in refused.stderr


def test_the_budget_counts_the_training_that_just_ended(tmp_path, monkeypatch):
    """After iteration 1's retraining the mean iteration (explore + label + retrain) is
    known and must decide: one more and the final potential's exploration would end past
    the budget, so the loop stops there and explores the final potential if that fits
    (the ethanethiol trial went on and ended at 57.5 min of a 55 min budget)."""
    import tfn_md.learn.loop as loop
    import tfn_md.learn.report as report

    clock = [0.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(report, "write_report", lambda learner, state: None)

    class Timed(Learner):  # each stage takes a fixed time on the fake clock
        def independent(self):
            clock[0] += 60.0

        def initial(self):
            clock[0] += 60.0

        def train(self, i):
            clock[0] += 600.0
            self.model_path(i).parent.mkdir(parents=True, exist_ok=True)
            self.model_path(i).write_text("weights")
            return {}

        def explore(self, i):
            clock[0] += 100.0
            return {"candidates": 5, "selected": 5}

        def label(self, i):
            clock[0] += 10.0
            return 5

        def labels_so_far(self):
            return 0

        def report_card(self):  # "weights" is no checkpoint
            pass

    raw = command_config(molecule="CH4", method="GFN2-xTB", out=str(tmp_path / "o"),
                         budget_minutes=36)  # 2160 s
    state = Timed(LearnConfig.from_dict(raw), progress=False).run()
    # train 0 ends at 720 s, explore + label at 830, train 1 at 1430; one more iteration
    # (710 s) and the final check (100 s) would end at 2240 > 2160: stop, and check
    assert state["budget_stop"] and len(state["history"]) == 2
    assert state["history"][1]["check"] == "done"
    assert state["seconds"] == 1530.0 <= 36 * 60
    # 24 min (1440 s): the same stop, and the check would end past it: skipped
    clock[0] = 0.0
    raw = command_config(molecule="CH4", method="GFN2-xTB", out=str(tmp_path / "p"),
                         budget_minutes=24)
    state = Timed(LearnConfig.from_dict(raw), progress=False).run()
    assert state["budget_stop"] and len(state["history"]) == 2
    assert state["history"][1]["check"].startswith("skipped")
    assert state["seconds"] == 1430.0
