"""Honest splits (issue 12): by trajectory and by contiguous time blocks; per-temperature
eval; trajectory ids of sampled frames, also for files written before they existed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from tfn_md.data import H5Dataset
from tfn_md.data.cli import add_data_parser
from tfn_md.data.sources import sample_xtb, trajectory_id
from tfn_md.data.splits import split_indices, trajectory_ids
from tfn_md.data.writer import write_atoms


def run(*argv) -> int:
    main = argparse.ArgumentParser(prog="tfn-md")
    add_data_parser(main.add_subparsers(dest="command"))
    args = main.parse_args(["data", *map(str, argv)])
    return args.func(args)


def _md_file(path: Path, n_traj: int = 6, n_frames: int = 20, new_style: bool = True) -> None:
    """Frames of ``n_traj`` trajectories (2 temperatures), interleaved in the file."""
    frames = []
    rng = np.random.default_rng(0)
    for f in range(n_frames):
        for t in range(n_traj):
            atoms = molecule("H2O")
            atoms.positions += rng.normal(scale=0.01, size=(3, 3))
            temperature = 300.0 if t % 2 else 600.0
            run_json = json.dumps({"source": "H2O", "seed": t})
            atoms.info = {"md_run": run_json, "md_temperature": temperature, "md_frame": f}
            if new_style:
                atoms.info["md_trajectory"] = trajectory_id(run_json, temperature)
            atoms.calc = SinglePointCalculator(atoms, energy=-1.0 * t, forces=np.zeros((3, 3)))
            frames.append(atoms)
    write_atoms(path, frames)


@pytest.mark.parametrize("new_style", [True, False])
def test_split_by_trajectory_shares_no_trajectory(tmp_path: Path, new_style: bool) -> None:
    path = tmp_path / "md.h5"
    _md_file(path, new_style=new_style)
    prefix = tmp_path / "p"
    assert run("split", path, "--by", "trajectory", "--train", "0.5", "--val", "0.2",
               "--test", "0.3", "--seed", "1", "-o", prefix) == 0
    record = json.loads(Path(f"{prefix}_split.json").read_text())
    assert record["by"] == "trajectory"
    with H5Dataset(path) as ds:
        ids = trajectory_ids(ds)
    owners = {}
    for part in ("train", "val", "test"):
        assert record[part], part
        for i in record[part]:
            assert owners.setdefault(ids[i], part) == part  # a trajectory in one part only
    assert sorted(i for p in ("train", "val", "test") for i in record[p]) == list(range(120))
    assert len(set(owners)) == 6


def test_split_by_block_is_contiguous(tmp_path: Path) -> None:
    path = tmp_path / "md.h5"
    _md_file(path, n_traj=2, n_frames=40)
    with H5Dataset(path) as ds:
        parts = split_indices(ds, [56, 12, 12], seed=3, by="block", block=4)
        ids, frames = trajectory_ids(ds), ds.column("md_frame")
    sizes = [len(parts[p]) for p in ("train", "val", "test")]
    assert sum(sizes) == 80 and all(abs(s - t) <= 4 for s, t in zip(sizes, [56, 12, 12]))
    for rows in parts.values():
        for traj in set(ids[rows]):
            f = np.sort(frames[rows][ids[rows] == traj])
            # whole blocks of 4 consecutive frames: block starts are multiples of 4
            assert len(f) % 4 == 0 and set(f[::4] % 4) == {0}
            assert np.array_equal(f.reshape(-1, 4) - f.reshape(-1, 4)[:, :1], np.tile(
                np.arange(4), (len(f) // 4, 1)))


def test_split_by_trajectory_errors(tmp_path: Path, capsys) -> None:
    plain = tmp_path / "plain.h5"
    atoms = molecule("H2O")
    atoms.calc = SinglePointCalculator(atoms, energy=0.0)
    write_atoms(plain, [atoms] * 5)
    assert run("split", plain, "--by", "trajectory", "-o", tmp_path / "x") == 1
    assert "record no trajectory" in capsys.readouterr().err
    few = tmp_path / "few.h5"
    _md_file(few, n_traj=2, n_frames=5)
    assert run("split", few, "--by", "trajectory", "-o", tmp_path / "y") == 1
    assert "cannot fill 3" in capsys.readouterr().err
    assert run("split", few, "--by", "trajectory", "--block", "2", "-o", tmp_path / "z") == 1
    assert "--block 2 applies to --by block only" in capsys.readouterr().err


def test_sampled_frames_record_their_trajectory(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    sample_xtb(out, molecule("H2O"), name="H2O", temperatures=[300, 500], n=2, interval=2,
               equilibration=2, seed=4, calculator=lambda method: EMT())
    with H5Dataset(out) as ds:
        ids = ds.column("md_trajectory")
        temps = ds.column("md_temperature")
        assert ds.mask("md_trajectory").all()
        derived = [trajectory_id(r.decode(), t) for r, t in zip(ds.column("md_run"), temps)]
    assert [i.decode() for i in ids] == derived
    assert len(set(derived)) == 2 and derived[0].startswith("H2O/seed4/300K/")


def test_eval_reports_per_temperature(tmp_path: Path, capsys) -> None:
    from tfn_md import TFN, save_potential
    from tfn_md.cli import main

    path = tmp_path / "md.h5"
    _md_file(path, n_traj=2, n_frames=3)
    # float64: the per-temperature and the overall evaluation batch the frames differently,
    # and float32 forces of a frame then differ in their last bits (thread scheduling)
    model = TFN(species=["H", "O"], channels=4, l_max=1, layers=1, cutoff=3.0).double()
    save_potential(model, tmp_path / "m.pt")
    assert main(["eval", str(tmp_path / "m.pt"), str(path), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    per = metrics["per_temperature"]
    assert sorted(per) == ["300", "600"] and per["300"]["n_structures"] == 3
    # the overall force MAE is the mean of the per-temperature ones (equal atom counts)
    mean = 0.5 * (per["300"]["forces_mae"] + per["600"]["forces_mae"])
    assert metrics["forces_mae"] == pytest.approx(mean, rel=1e-9)
