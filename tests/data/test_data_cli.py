"""``tfn-md data`` commands through an argparse harness."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from tfn_md.data import H5Dataset
from tfn_md.data.cli import add_data_parser, split_sizes


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="tfn-md")
    add_data_parser(main.add_subparsers(dest="command"))
    return main


def run(*argv: str) -> int:
    args = parser().parse_args(["data", *map(str, argv)])
    return args.func(args)


def _frames(n: int = 10) -> list:
    rng = np.random.default_rng(2)
    frames = []
    for i in range(n):
        atoms = molecule("CH3OH" if i % 2 else "H2O")
        atoms.rattle(0.05, seed=i)
        atoms.info["index"] = i
        atoms.calc = SinglePointCalculator(
            atoms, energy=-10.0 - i, forces=rng.normal(size=(len(atoms), 3))
        )
        frames.append(atoms)
    return frames


@pytest.fixture()
def h5(tmp_path: Path) -> Path:
    xyz = tmp_path / "frames.extxyz"
    ase.io.write(xyz, _frames())
    out = tmp_path / "frames.h5"
    assert run("import", xyz, "-o", out) == 0
    return out


@pytest.mark.parametrize("command", ["import", "qm9", "sample", "info", "validate", "split"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["data", command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert f"tfn-md data {command}" in text and len(text) > 200


def test_import_append_overwrite(h5: Path, tmp_path: Path, capsys) -> None:
    xyz = tmp_path / "frames.extxyz"
    assert len(H5Dataset(h5)) == 10
    assert run("import", xyz, "-o", h5) == 1  # refuses to touch an existing file
    assert "--append" in capsys.readouterr().err
    assert run("import", xyz, xyz, "-o", h5, "--append") == 0
    assert len(H5Dataset(h5)) == 30
    assert run("import", xyz, "-o", h5, "--overwrite", "--index", "0:4") == 0
    ds = H5Dataset(h5)
    assert len(ds) == 4 and ds[3].info["index"] == 3


def test_import_named_keys(tmp_path: Path) -> None:
    atoms = molecule("H2O")
    atoms.info["DFT_energy"] = -5.5
    atoms.new_array("DFT_forces", np.ones((3, 3)))
    xyz = tmp_path / "dft.extxyz"
    ase.io.write(xyz, atoms)
    out = tmp_path / "dft.h5"
    assert (
        run("import", xyz, "-o", out, "--energy-key", "DFT_energy", "--forces-key", "DFT_forces")
        == 0
    )
    got = H5Dataset(out)[0]
    assert got.get_potential_energy() == -5.5 and np.array_equal(got.get_forces(), np.ones((3, 3)))


def test_info(h5: Path, capsys) -> None:
    capsys.readouterr()
    assert run("info", h5) == 0
    out = capsys.readouterr().out
    assert "structures   10" in out
    assert "elements     H 30, C 5, O 10" in out
    assert "forces" in out and "eV/Angstrom" in out and "10/10" in out
    assert "energy (eV)  min -19" in out


def test_validate_exit_codes(h5: Path, tmp_path: Path, capsys) -> None:
    assert run("validate", h5) == 0
    assert "OK" in capsys.readouterr().out
    broken = tmp_path / "broken.h5"
    broken.write_bytes(h5.read_bytes()[:3000])
    assert run("validate", broken) == 1
    err = capsys.readouterr().err
    assert "INVALID" in err and str(broken) in err
    assert run("validate", tmp_path / "missing.h5") == 1


def test_split_fractions_counts_and_seed(h5: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "parts"
    assert (
        run(
            "split",
            h5,
            "--train",
            "0.6",
            "--val",
            "0.2",
            "--test",
            "0.2",
            "--seed",
            "3",
            "-o",
            prefix,
        )
        == 0
    )
    record = json.loads(Path(f"{prefix}_split.json").read_text())
    parts = {name: record[name] for name in ("train", "val", "test")}
    assert [len(v) for v in parts.values()] == [6, 2, 2]
    assert sorted(i for part in parts.values() for i in part) == list(range(10))
    source = H5Dataset(h5)
    for name, indices in parts.items():
        ds = H5Dataset(f"{prefix}_{name}.h5")
        assert [a.info["index"] for a in ds] == indices
        for k, i in enumerate(indices):
            a, b = source[i], ds[k]
            assert np.array_equal(a.positions, b.positions)
            assert np.array_equal(a.get_forces(), b.get_forces())
            assert a.get_potential_energy() == b.get_potential_energy()
        assert ds.fields["forces"] == source.fields["forces"]
    # the same seed gives the same split, another seed another one
    again = tmp_path / "again"
    run("split", h5, "--train", "0.6", "--val", "0.2", "--test", "0.2", "--seed", "3", "-o", again)
    assert json.loads(Path(f"{again}_split.json").read_text())["train"] == parts["train"]
    other = tmp_path / "other"
    run("split", h5, "--train", "0.6", "--val", "0.2", "--test", "0.2", "--seed", "4", "-o", other)
    assert json.loads(Path(f"{other}_split.json").read_text())["train"] != parts["train"]
    # counts; no temporary files left behind
    counted = tmp_path / "counted"
    assert run("split", h5, "--train", "5", "--val", "3", "--test", "0", "-o", counted) == 0
    assert len(H5Dataset(f"{counted}_train.h5")) == 5
    assert not Path(f"{counted}_test.h5").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert run("split", h5, "--train", "8", "--val", "3", "-o", counted) == 1  # 8 + 3 + 1 > 10


def test_split_sizes() -> None:
    assert split_sizes(10, 0.8, 0.1, 0.1) == [8, 1, 1]
    assert split_sizes(7, 0.8, 0.1, 0.1) == [6, 1, 0]  # fractions summing to 1 use all
    assert split_sizes(7, 0.5, 0.25, 0.25) == [4, 2, 1]
    assert split_sizes(100, 10, 5, 0.5) == [10, 5, 50]
    with pytest.raises(ValueError):
        split_sizes(10, 11, 0, 0)


def test_qm9_resumes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "qm9.h5"
    assert run("qm9", "-o", out, "--limit", "3") == 0
    assert run("qm9", "-o", out, "--limit", "5") == 0
    assert "3 already there" in capsys.readouterr().out
    ds = H5Dataset(out)
    assert ds.column("qm9_index").tolist() == [1, 2, 3, 4, 5]
    assert ds.fields["U"].unit == "eV"
    assert run("qm9", "-o", tmp_path / "small.h5", "--max-atoms", "4", "--limit", "3") == 0
    assert H5Dataset(tmp_path / "small.h5").n_atoms.max() <= 4


CLI_SCRIPT = """
import argparse, sys
from tfn_md.data.cli import add_data_parser

main = argparse.ArgumentParser(prog="tfn-md")
add_data_parser(main.add_subparsers(dest="command"))
args = main.parse_args(["data", *sys.argv[1:]])
sys.exit(args.func(args))
"""


def run_child(*argv: object) -> int:
    """The command in a child process with single-threaded tblite (fast on a busy machine)."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, *map(str, argv)],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode


def test_sample_resumes(tmp_path: Path) -> None:
    pytest.importorskip("tblite")
    out = tmp_path / "water.h5"
    common = ["--molecule", "H2O", "--temperature", "300", "400", "--interval", "2"]
    assert run_child("sample", *common, "--n", "2", "--equilibration", "3", "-o", out) == 0
    assert len(H5Dataset(out)) == 4
    assert run_child("sample", *common, "--n", "3", "--equilibration", "3", "-o", out) == 0
    ds = H5Dataset(out)
    assert sorted((a.info["md_temperature"], a.info["md_frame"]) for a in ds) == [
        (t, j) for t in (300.0, 400.0) for j in range(3)
    ]
    assert ds[5].get_forces().shape == (3, 3)


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, capsys) -> None:
    assert run("import", tmp_path / "absent.extxyz", "-o", tmp_path / "x.h5") == 1
    assert "absent.extxyz" in capsys.readouterr().err
    assert (
        run(
            "sample",
            "--molecule",
            "NoSuchThing",
            "--temperature",
            "300",
            "--n",
            "1",
            "-o",
            tmp_path / "s.h5",
        )
        == 1
    )
    assert "unknown molecule" in capsys.readouterr().err
    foreign = tmp_path / "foreign.h5"
    foreign.write_bytes(b"not hdf5 at all")
    xyz = tmp_path / "one.extxyz"
    ase.io.write(xyz, molecule("H2O"))
    assert run("import", xyz, "-o", foreign, "--append") == 1
    assert "not an HDF5 file" in capsys.readouterr().err
    assert foreign.read_bytes() == b"not hdf5 at all"
    assert run("split", foreign) == 1
    assert run("info", foreign) == 1
