"""Issue 11: datasets, training and the command line refuse bad input with one clear
line, and never lose or silently corrupt data."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from tests.helpers import emt_dataset, make_model, small_config
from tfn_md import save_potential
from tfn_md.cli import main
from tfn_md.data import DatasetError, H5Dataset, validate, write_atoms
from tfn_md.data.loader import GraphDataset, collate_batch
from tfn_md.train import TrainConfig, Trainer, batch_loss
from tfn_md.train.config import LossSection

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def emt(tmp_path_factory):
    return emt_dataset(tmp_path_factory.mktemp("emt") / "emt.h5")


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def _edit(path: Path, fn) -> Path:
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err


def _one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- non-finite labels


@pytest.mark.parametrize(
    ("key", "row", "value", "message"),
    [
        ("structures/energy", 3, np.nan, r"'structures/energy' of structure 3 is nan"),
        ("structures/energy", 0, np.inf, r"'structures/energy' of structure 0 is inf"),
        ("atoms/forces", 5, np.inf, r"'atoms/forces' of structure 1 is \[inf, inf, inf\]"),
        ("structures/stress", 2, np.nan, r"'structures/stress' of structure 2 is \[nan"),
    ],
)
def test_non_finite_labels_fail_validate_train_and_eval(
    emt, tmp_path, capsys, key, row, value, message
):
    path = _edit(_copy(emt, tmp_path / "bad.h5"), lambda f: f[key].__setitem__(row, value))
    with pytest.raises(DatasetError, match=message + r".*must be finite"):
        validate(path)
    code, err = _cli(capsys, "data", "validate", path)
    assert code == 1 and _one_line(err).startswith("INVALID")
    if key.endswith("energy"):  # info summarises the finite energies and warns
        assert main(["data", "info", str(path)]) == 0
        out = capsys.readouterr().out
        assert "1 non-finite energies" in out and " nan " not in out and " inf " not in out
    # training refuses before the first step, naming the label and the structure
    cfg = small_config(path, tmp_path / "run")
    cfg.data.valid_fraction = 0.5
    label = key.split("/")[1]
    with pytest.raises(ValueError, match=rf"label '{label}' of structure \d+ is .*must be finite"):
        Trainer(cfg, progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()
    model = make_model(species=["H", "C", "O", "Cu"], cutoff=4.0)
    save_potential(model, tmp_path / "m.pt")
    code, err = _cli(capsys, "eval", tmp_path / "m.pt", path)
    assert code == 1 and "must be finite" in _one_line(err)


# ---------------------------------------------------------------- damaged index and data


@pytest.mark.parametrize(
    ("key", "row", "value"),
    [
        ("structures/n_atoms", 4, -3),
        ("structures/offset", 6, 10**6),
        ("structures/offset", 2, -5),
        ("structures/n_atoms", 7, 10**6),
    ],
)
def test_damaged_index_rows_are_errors(emt, tmp_path, capsys, key, row, value):
    path = _edit(_copy(emt, tmp_path / "idx.h5"), lambda f: f[key].__setitem__(row, value))
    ds = H5Dataset(path)
    with pytest.raises(DatasetError, match=r"damaged index: structure \d+ has n_atoms"):
        for i in range(len(ds)):
            ds.get_arrays(i)
    with pytest.raises(DatasetError, match="damaged index"):
        ds.n_atoms
    code, err = _cli(capsys, "data", "info", path)
    assert code == 1 and "damaged index" in _one_line(err)
    save_potential(make_model(species=["H", "C", "O", "Cu"]), tmp_path / "m.pt")
    code, err = _cli(capsys, "eval", tmp_path / "m.pt", path)
    assert code == 1 and "damaged index" in _one_line(err)
    with pytest.raises(DatasetError):
        validate(path)


def test_random_bytes_in_data_chunks_fail_the_checksum(emt, tmp_path, capsys):
    path = _copy(emt, tmp_path / "flip.h5")
    with h5py.File(path, "r") as f:
        ds = f["atoms/positions"]
        assert ds.fletcher32
        info = ds.id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    where = info.byte_offset + 64
    data[where : where + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"'/atoms/positions' rows .* checksum mismatch"):
        validate(path)
    code, err = _cli(capsys, "data", "validate", path)
    assert code == 1 and "checksum mismatch" in _one_line(err)
    with pytest.raises(DatasetError, match="checksum mismatch or corrupt data"):
        H5Dataset(path)[0]
    code, out = main(["data", "validate", str(emt)]), capsys.readouterr().out
    assert code == 0 and "checksums verified" in out


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("energy", np.zeros((24, 2)), r"'energy' must be per-structure rows of shape \(\)"),
        ("energy", np.array([b"abc"] * 24), r"dtype strings; 'energy' must be"),
        ("forces", np.zeros((24, 3)), r"'forces' must be per-atom rows of shape \(3,\)"),
        ("stress", np.zeros((24, 3, 3)), r"'stress' must be per-structure rows of shape \(6,\)"),
    ],
)
def test_wrongly_shaped_or_typed_labels_fail_on_open(emt, tmp_path, capsys, name, data, message):
    def replace(f):
        group = "structures" if name in f["structures"] else "atoms"
        del f[f"{group}/{name}"]
        f.create_dataset(f"structures/{name}", data=data)
        f[f"structures/{name}"].attrs.update(origin="calc", unit="")

    path = _edit(_copy(emt, tmp_path / "shape.h5"), replace)
    with pytest.raises(DatasetError, match=message):
        H5Dataset(path)
    for argv in (["data", "info", path], ["data", "validate", path]):
        code, err = _cli(capsys, *argv)
        assert code == 1 and name in _one_line(err)


def test_far_atom_in_a_dataset_is_an_error_through_eval(tmp_path):
    """A damaged structure must not reach vesin (SIGFPE kills the process): run in a child."""
    atoms = molecule("H2O")
    atoms.positions[0] = [1e6, 0, 0]
    atoms.calc = SinglePointCalculator(atoms, energy=1.0, forces=np.zeros((3, 3)))
    write_atoms(tmp_path / "far.h5", atoms)
    save_potential(make_model(species=["H", "O"]), tmp_path / "m.pt")
    done = subprocess.run(
        [sys.executable, "-m", "tfn_md.cli", "eval", str(tmp_path / "m.pt"),
         str(tmp_path / "far.h5")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "non-periodic direction" in _one_line(done.stderr)


# ---------------------------------------------------------------- splits


def test_split_removes_a_stale_part(emt, tmp_path, capsys):
    prefix = tmp_path / "p"
    assert main(["data", "split", str(emt), "--train", "0.5", "--val", "0.25", "--test", "0.25",
                 "-o", str(prefix)]) == 0
    assert Path(f"{prefix}_test.h5").exists()
    assert main(["data", "split", str(emt), "--train", "0.75", "--val", "0.25", "--test", "0",
                 "-o", str(prefix)]) == 0
    record = json.loads(Path(f"{prefix}_split.json").read_text())
    assert record["test"] == []
    assert not Path(f"{prefix}_test.h5").exists()
    assert "removed the earlier" in capsys.readouterr().out


# ---------------------------------------------------------------- training config


def _toml(tmp_path, data, **sections) -> Path:
    text = [f'[data]\ntrain = "{data}"\nbatch_size = 4\n']
    for name, body in sections.items():
        text.append(f"[{name}]\n{textwrap.dedent(body)}\n")
    if "run" not in sections:
        text.append(f'[run]\nout = "{tmp_path / "run"}"\nplots = false\n')
    path = tmp_path / "c.toml"
    path.write_text("\n".join(text).replace("[data]\ntrain", "[data]\ntrain", 1))
    return path


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"optim": 'lr = "fast"'}, r"optim.lr = 'fast' is not allowed: a finite number > 0"),
        ({"optim": "lr = -1e-3"}, r"optim.lr = -0.001 is not allowed"),
        ({"optim": "epochs = 0"}, r"optim.epochs = 0 is not allowed: an integer >= 1"),
        ({"optim": "ema_decay = 1.5"}, r"optim.ema_decay = 1.5 is not allowed"),
        ({"optim": 'schedule = "linear"'}, r"optim.schedule = 'linear' is not allowed: one of"),
        ({"model": 'channels = "8"'}, r"model.channels = '8' is not allowed: an integer >= 1"),
        ({"model": "cutoff = 0.0"}, r"model.cutoff = 0.0 is not allowed"),
        ({"model": "chanels = 8"}, r"unknown keys \['chanels'\] in \[model\]"),
        ({"model": 'species = ["H", "C"]'}, r"model.species = \['H', 'C'\] lacks the elements"),
        ({"loss": "vectors = { dipol = 1.0 }"}, r"loss.vectors names 'dipol', which is not"),
        ({"loss": 'forces = "lots"'}, r"loss.forces = 'lots' is not allowed"),
        ({"run": 'dtype = "float16"'}, r"run.dtype = 'float16' is not allowed: one of"),
        ({"run": 'device = "gpu0"'}, r"run.device = 'gpu0' is not allowed"),
    ],
)
def test_toml_mistakes_name_the_key(emt, tmp_path, capsys, sections, message):
    path = _toml(tmp_path, emt, **sections)
    code, err = _cli(capsys, "train", path)
    assert code == 1
    line = _one_line(err)
    assert line.startswith("tfn-md train: error:")
    import re

    assert re.search(message, line), line


@pytest.mark.parametrize(
    ("data_lines", "message"),
    [
        ("batch_size = 2.5", r"data.batch_size = 2.5 is not allowed: an integer >= 1"),
        ("batch_size = 0", r"data.batch_size = 0 is not allowed: an integer >= 1"),
        ("valid_fraction = 1.0", r"data.valid_fraction = 1.0 is not allowed"),
        ("valid_fraction = 0.0", r"data.valid_fraction = 0.0 is not allowed without data.valid"),
        ('valid = "absent.h5"', r"absent.h5: no such dataset file"),
    ],
)
def test_toml_data_mistakes(emt, tmp_path, capsys, data_lines, message):
    path = tmp_path / "c.toml"
    path.write_text(f'[data]\ntrain = "{emt}"\n{data_lines}\n[run]\nout = "{tmp_path}"\n')
    code, err = _cli(capsys, "train", path)
    import re

    assert code == 1 and re.search(message, _one_line(err)), err


def test_not_toml_is_one_line(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[data\ntrain = 'x'\n")
    code, err = _cli(capsys, "train", path)
    assert code == 1 and "not valid TOML" in _one_line(err)


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[optim]\nlr = "fast"\n')
    with pytest.raises(TypeError, match="optim.lr"):
        main(["--debug", "train", str(path)])


def test_tiny_dataset_leaves_no_training_set(tmp_path):
    atoms = molecule("H2O")
    atoms.calc = SinglePointCalculator(atoms, energy=1.0, forces=np.zeros((3, 3)))
    write_atoms(tmp_path / "one.h5", atoms)
    cfg = small_config(tmp_path / "one.h5", tmp_path / "run")
    with pytest.raises(ValueError, match=r"leaves an empty training set"):
        Trainer(cfg, progress=False)
    assert not (tmp_path / "run" / "best.pt").exists()


def test_empty_valid_file(emt, tmp_path):
    write_atoms(tmp_path / "empty.h5", [])
    cfg = small_config(emt, tmp_path / "run")
    cfg.data.valid = str(tmp_path / "empty.h5")
    with pytest.raises(ValueError, match=r"data.valid = .*empty.h5' holds no structures"):
        Trainer(cfg, progress=False)


def test_training_stops_on_a_non_finite_loss(emt, tmp_path):
    trainer = Trainer(small_config(emt, tmp_path, epochs=2), progress=False)
    with torch.no_grad():
        trainer.model.scale.fill_(float("inf"))  # as if the weights had diverged
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(FloatingPointError, match=r"the loss became (nan|inf).*epoch 1"):
        trainer.fit()
    for p, q in zip(before, trainer.model.parameters()):
        assert torch.equal(p, q)  # no step was taken with non-finite gradients
    assert not (tmp_path / "best.pt").exists()


def test_resume_goes_through_the_checkpoint_reader(emt, tmp_path):
    Trainer(small_config(emt, tmp_path, epochs=1), progress=False).fit()
    last = tmp_path / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["format_version"] = 99
    torch.save(ckpt, last)
    from tfn_md.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="format version 99, newer"):
        Trainer(small_config(emt, tmp_path, epochs=2), resume=True, progress=False)


# ---------------------------------------------------------------- vectors


def _vector_frames(n=12, seed=0):
    """Molecules with a per-structure 'dip' and per-atom 'vec' label; one-atom ones too."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = molecule("H2O") if k % 3 else Atoms("O", positions=[[0, 0, 0]])
        atoms.rattle(0.05, seed=k)
        atoms.info["dip"] = rng.normal(size=3)
        atoms.new_array("vec", rng.normal(size=(len(atoms), 3)))
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()))
        frames.append(atoms)
    return frames


def test_per_atom_labels_from_field_metadata_one_atom_first(tmp_path):
    write_atoms(tmp_path / "v.h5", _vector_frames())
    data = GraphDataset(tmp_path / "v.h5", 4.0, vector_keys=["dip", "vec"])
    graph, t = collate_batch([data[0], data[1]])  # one O atom, then a water
    assert t["vec"].shape == (4, 3) and t["vec_mask"].shape == (4,)
    assert t["dip"].shape == (2, 3) and t["dip_mask"].shape == (2,)
    assert data.per_atom == {"forces", "vec"}
    weights = LossSection(energy=0.0, forces=0.0, vectors={"vec": 1.0, "dip": 1.0})
    model = make_model(species=["H", "O"])
    loss, _ = batch_loss(model, graph, t, weights)
    assert torch.isfinite(loss) and loss > 0


def test_vector_only_training_is_validated(tmp_path):
    write_atoms(tmp_path / "v.h5", _vector_frames(24))
    cfg = TrainConfig.from_dict({
        "data": {"train": str(tmp_path / "v.h5"), "batch_size": 4, "valid_fraction": 0.25},
        "model": {"channels": 8, "l_max": 1, "layers": 2, "cutoff": 4.0, "radial_hidden": 16},
        "loss": {"energy": 0.0, "forces": 0.0, "vectors": {"vec": 1.0}},
        "optim": {"epochs": 3, "lr": 1e-2},
        "run": {"out": str(tmp_path / "run"), "seed": 0, "plots": False},
    })
    trainer = Trainer(cfg, progress=False)
    metrics = trainer.validate()
    assert metrics["vec_rmse"] > 0 and metrics["loss"] == pytest.approx(metrics["vec_rmse"] ** 2)
    trainer.fit()
    losses = [row["valid_loss"] for row in trainer.history]
    assert len(set(losses)) == len(losses)  # the vector error is what validation tracks
    assert all("valid_vec_mae" in row for row in trainer.history)


# ---------------------------------------------------------------- docs


def test_readme_python_version_matches_pyproject():
    import re
    import tomllib

    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    version = re.search(r"[\d.]+", required).group()
    assert f"Python >= {version}" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------- concurrent creation

CREATOR = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from ase import Atoms
    from tfn_md.data.hdf5 import DatasetWriter

    folder, tag, start, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    for k in range(rounds):
        time.sleep(max(0.0, start + 0.3 * k - time.time()))  # both at the same instant
        deadline = time.time() + 20
        while True:
            try:
                writer = DatasetWriter(f"{folder}/new{k}.h5")
                break
            except RuntimeError as err:  # the other process holds it: wait for it
                assert "another process is writing" in str(err), err
                assert time.time() < deadline, "waited too long"
                time.sleep(0.01)
        with writer:
            for j in range(3):
                atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
                atoms.info["who"] = f"{tag}-{k}-{j}"
                writer.append(atoms)
                print(k, f"{tag}-{k}-{j}", flush=True)  # reported as written
    """
)


def _race(folder: Path, rounds: int) -> None:
    import time

    start = time.time() + 4.0  # both processes imported by then
    procs = [
        subprocess.Popen([sys.executable, "-c", CREATOR, str(folder), tag, str(start),
                          str(rounds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT)
        for tag in ("a", "b")
    ]
    reported: dict[int, set[str]] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=60 + rounds)
        assert proc.returncode == 0, err
        for line in out.split("\n"):
            if line:
                k, who = line.split()
                reported.setdefault(int(k), set()).add(who)
    for k in range(rounds):
        stored = {a.info["who"] for a in H5Dataset(folder / f"new{k}.h5")}
        assert stored == reported[k], (k, sorted(reported[k] - stored))
        assert len(stored) == 6
        validate(folder / f"new{k}.h5")
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


def test_two_processes_create_the_same_new_file(tmp_path):
    _race(tmp_path, rounds=8)


@pytest.mark.slow
def test_two_processes_create_the_same_new_file_many_times(tmp_path):
    _race(tmp_path, rounds=60)
