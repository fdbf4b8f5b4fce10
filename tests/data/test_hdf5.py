"""The HDF5 dataset file: round trips, appends, laziness, errors, crash safety."""

from __future__ import annotations

import inspect
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator

from tfn_md.data import DatasetError, DatasetWriter, H5Dataset, validate, write_atoms
from tfn_md.data.hdf5 import FORMAT_VERSION, MASKS


def make(i: int) -> Atoms:
    """Structure ``i``, deterministic; also run by the killed writer process."""
    rng = np.random.default_rng(i)
    n = int(rng.integers(1, 30))
    atoms = Atoms(
        numbers=rng.integers(1, 10, n),
        positions=rng.normal(size=(n, 3)) * 3.0,
        cell=np.eye(3) * 10.0 + rng.normal(size=(3, 3)) * 0.1,
        pbc=[i % 2 == 0, True, False],
    )
    atoms.info["index"] = i
    atoms.info["tensor"] = rng.normal(size=(3, 3))
    atoms.new_array("vec", rng.normal(size=(n, 3)))
    if i in (5, 20, 45):  # a new key: the writer rewrites the file (copy and swap)
        atoms.info[f"new{i}"] = float(i)
    results = {"energy": float(rng.normal()), "forces": rng.normal(size=(n, 3))}
    if i % 3 == 0:
        results["stress"] = rng.normal(size=6)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def assert_atoms_equal(a: Atoms, b: Atoms) -> None:
    """Bitwise equality of everything the dataset file stores."""
    assert np.array_equal(a.numbers, b.numbers)
    assert a.positions.dtype == b.positions.dtype == np.float64
    assert np.array_equal(a.positions, b.positions)
    assert np.array_equal(a.cell.array, b.cell.array)
    assert np.array_equal(a.pbc, b.pbc)
    assert set(a.info) == set(b.info)
    for key, value in a.info.items():
        assert type(b.info[key]) is type(value) or np.asarray(value).ndim > 0, key
        assert np.array_equal(np.asarray(value), np.asarray(b.info[key])), key
    assert set(a.arrays) == set(b.arrays)
    for key, value in a.arrays.items():
        assert b.arrays[key].dtype == value.dtype, key
        assert np.array_equal(value, b.arrays[key]), key
    ra = a.calc.results if a.calc is not None else {}
    rb = b.calc.results if b.calc is not None else {}
    assert set(ra) == set(rb)
    for key, value in ra.items():
        assert np.array_equal(np.asarray(value), np.asarray(rb[key])), key


def sample_frames() -> list[Atoms]:
    """Molecules and a crystal; extras of every kind; some values missing."""
    rng = np.random.default_rng(0)
    water = molecule("H2O")
    water.info.update(config_type="water", step=3, flag=True, virial=rng.normal(size=(3, 3)))
    water.new_array("vectors", rng.normal(size=(3, 3)))
    water.new_array("q", rng.normal(size=3))
    water.calc = SinglePointCalculator(
        water, energy=-14.2, forces=rng.normal(size=(3, 3)), dipole=rng.normal(size=3)
    )
    ethanol = molecule("CH3CH2OH")
    ethanol.info.update(config_type="ethanol-long-name", step=4, virial=rng.normal(size=(3, 3)))
    ethanol.new_array("vectors", rng.normal(size=(9, 3)))
    ethanol.calc = SinglePointCalculator(ethanol, energy=-40.0, forces=rng.normal(size=(9, 3)))
    copper = bulk("Cu", cubic=True) * (2, 1, 1)
    copper.rattle(0.05, seed=1)
    copper.calc = SinglePointCalculator(
        copper, energy=-30.1, forces=rng.normal(size=(8, 3)), stress=rng.normal(size=6)
    )
    return [water, ethanol, copper]


@pytest.fixture()
def frames_file(tmp_path: Path) -> tuple[list[Atoms], Path]:
    xyz = tmp_path / "frames.extxyz"
    ase.io.write(xyz, sample_frames())
    frames = ase.io.read(xyz, index=":")
    out = tmp_path / "frames.h5"
    assert write_atoms(out, frames) == 3
    return frames, out


def test_roundtrip_extxyz_exact(frames_file: tuple[list[Atoms], Path]) -> None:
    frames, path = frames_file
    ds = H5Dataset(path)
    assert len(ds) == 3
    assert ds.n_atoms.tolist() == [3, 9, 8]
    for ref, got in zip(frames, ds, strict=True):
        assert_atoms_equal(ref, got)
    # the properties the test relies on really went through the file
    assert ds.fields["vectors"].per_atom and ds.fields["vectors"].shape == (3,)
    assert ds.fields["virial"].shape == (3, 3) and ds.fields["virial"].origin == "info"
    assert ds[2].get_stress().shape == (6,)
    assert ds.attrs["energy_unit"] == "eV" and ds.attrs["length_unit"] == "Angstrom"
    assert ds.attrs["format_version"] == FORMAT_VERSION
    assert ds.fields["forces"].unit == "eV/Angstrom"
    validate(path)


def test_missing_values_are_nan_and_masked(frames_file: tuple[list[Atoms], Path]) -> None:
    _, path = frames_file
    ds = H5Dataset(path)
    assert ds.mask("stress").tolist() == [False, False, True]
    stress = ds.column("stress")
    assert np.isnan(stress[:2]).all() and np.isfinite(stress[2]).all()
    assert ds.mask("vectors").tolist() == [True, True, False]
    assert np.isnan(ds.column("vectors")[12:]).all()  # copper's 8 atoms
    assert "stress" not in ds.get_arrays(0) and "vectors" not in ds.get_arrays(2)
    assert ds.mask("flag").tolist() == [True, False, False]
    with pytest.raises(PropertyNotImplementedError):
        ds[0].get_stress()  # no stress for water: not silently NaN


def test_append_new_keys_and_widening(tmp_path: Path) -> None:
    path = tmp_path / "grow.h5"
    first = [make(0), make(1)]
    write_atoms(path, first)
    a = make(2)
    a.info["label"] = "a much longer string than the first batch had at all"
    a.info["index"] = 2.5  # int column widened to float
    a.new_array("charges_extra", np.arange(len(a), dtype=np.float32))
    with DatasetWriter(path) as writer:
        assert len(writer) == 2
        writer.append(a)
        writer.append(make(3))
        assert len(writer) == 4
    ds = H5Dataset(path)
    assert len(ds) == 4
    assert ds.fields["index"].dtype == np.float64
    assert ds[2].info["label"] == a.info["label"] and ds[2].info["index"] == 2.5
    assert ds[2].arrays["charges_extra"].dtype == np.float32
    assert ds.mask("label").tolist() == [False, False, True, False]
    for i in (0, 1, 3):
        ref = make(i)
        ref.info["index"] = float(i)
        assert_atoms_equal(ref, ds[i])
    validate(path)


def test_append_false_replaces(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    write_atoms(path, [make(i) for i in range(3)])
    write_atoms(path, [make(7)], append=False)
    ds = H5Dataset(path)
    assert len(ds) == 1
    assert_atoms_equal(make(7), ds[0])


def test_stress_3x3_stored_as_voigt(tmp_path: Path) -> None:
    atoms = bulk("Al")
    full = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    atoms.calc = SinglePointCalculator(atoms, energy=1.0)
    atoms.calc.results["stress"] = full
    write_atoms(tmp_path / "s.h5", atoms)
    assert H5Dataset(tmp_path / "s.h5")[0].get_stress().tolist() == [1, 2, 3, 4, 5, 6]


def test_open_reads_no_arrays_and_getitem_reads_one_structure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lazy.h5"
    write_atoms(path, [make(i) for i in range(50)])
    n_atoms = H5Dataset(path).n_atoms
    reads: list[tuple[str, object]] = []
    original = h5py.Dataset.__getitem__

    def spy(self: h5py.Dataset, sel: object) -> object:
        reads.append((self.name, sel))
        return original(self, sel)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    ds = H5Dataset(path)
    # opening: the committed count and two index entries, nothing per atom
    assert all(not name.startswith("/atoms") for name, _ in reads), reads
    assert sum(1 for _ in reads) <= 4
    assert ds._h5 is None  # the handle is opened on first use
    reads.clear()
    atoms = ds[17]
    assert len(atoms) == n_atoms[17]
    for name, sel in reads:
        if name.startswith("/atoms"):
            assert isinstance(sel, slice) and sel.stop - sel.start == n_atoms[17], (name, sel)
        else:
            assert sel in (17, slice(17, 18)), (name, sel)  # row 17 only


def test_pickle_drops_handle(frames_file: tuple[list[Atoms], Path]) -> None:
    frames, path = frames_file
    ds = H5Dataset(path)
    ds[0]  # opens the handle
    assert ds._h5 is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None
    assert_atoms_equal(frames[1], clone[1])
    assert_atoms_equal(frames[1], ds[1])


def test_dataloader_spawned_worker(frames_file: tuple[list[Atoms], Path]) -> None:
    torch = pytest.importorskip("torch")
    frames, path = frames_file
    ds = H5Dataset(path)
    ds[0]  # an open handle in the parent must not matter
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, num_workers=1, collate_fn=list, multiprocessing_context="spawn"
    )
    got = [atoms for batch in loader for atoms in batch]
    for ref, atoms in zip(frames, got, strict=True):
        assert_atoms_equal(ref, atoms)


def test_negative_index_and_slice(frames_file: tuple[list[Atoms], Path]) -> None:
    frames, path = frames_file
    ds = H5Dataset(path)
    assert_atoms_equal(frames[-1], ds[-1])
    assert [len(a) for a in ds[1:]] == [9, 8]
    with pytest.raises(IndexError):
        ds[3]


# ---------------------------------------------------------------- broken files


def _edit(path: Path, fn) -> None:
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.attrs.__delitem__("format"), "not a tfn_md dataset"),
        (lambda f: f.attrs.__setitem__("format", "something.else"), "not a tfn_md dataset"),
        (lambda f: f.attrs.__setitem__("format_version", FORMAT_VERSION + 1), "newer"),
        (lambda f: f.attrs.__setitem__("energy_unit", "kcal/mol"), "energy_unit"),
        (lambda f: f.__delitem__("atoms/positions"), "missing required dataset '/atoms/positions'"),
        (lambda f: f.__delitem__("structures/cell"), "missing required dataset"),
        (lambda f: f.__delitem__("n_structures"), "missing required '/n_structures'"),
        (lambda f: f[MASKS].__delitem__("energy"), "missing mask"),
        (lambda f: f["structures/energy"].resize(2, axis=0), "inconsistent lengths"),
        (lambda f: f["atoms/forces"].resize(10, axis=0), "inconsistent lengths"),
        (lambda f: f["n_structures"].__setitem__(0, 9), "inconsistent offsets"),
        (lambda f: f["n_structures"].__setitem__(0, 10**6), "inconsistent lengths"),
        (lambda f: f["structures/offset"].__setitem__(0, 2), "inconsistent offsets"),
    ],
)
def test_broken_layout_raises(frames_file, edit, message: str) -> None:
    _, path = frames_file
    _edit(path, edit)
    with pytest.raises(DatasetError, match=message) as err:
        H5Dataset(path)
    assert str(path) in str(err.value)
    with pytest.raises(DatasetError):
        validate(path)


def test_validate_catches_bad_offsets_and_mask(frames_file) -> None:
    _, path = frames_file
    H5Dataset(path)
    _edit(path, lambda f: f["structures/offset"].__setitem__(1, 4))
    H5Dataset(path)  # opening checks only the ends of the index
    with pytest.raises(DatasetError, match="structure 1 starts at atom 4, expected 3"):
        validate(path)
    _edit(path, lambda f: f["structures/offset"].__setitem__(1, 3))
    _edit(path, lambda f: f["structures/stress"].__setitem__(0, np.zeros(6)))
    with pytest.raises(DatasetError, match="mask says missing"):
        validate(path)


def test_not_hdf5_truncated_and_garbage(tmp_path: Path, frames_file) -> None:
    _, path = frames_file
    text = tmp_path / "notes.h5"
    text.write_text("energy = -1.0\n")
    with pytest.raises(DatasetError, match="not an HDF5 file") as err:
        H5Dataset(text)
    assert str(text) in str(err.value)
    with pytest.raises(FileNotFoundError):
        H5Dataset(tmp_path / "absent.h5")
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 100, 10):
        short = tmp_path / f"cut{cut}.h5"
        short.write_bytes(data[:cut])
        with pytest.raises(DatasetError) as err:
            H5Dataset(short)
        assert str(short) in str(err.value)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(data[:8] + os.urandom(len(data) - 8))
    with pytest.raises(DatasetError):
        H5Dataset(garbage)


def test_plain_hdf5_is_not_a_dataset(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(DatasetError, match="root attribute 'format' is missing"):
        H5Dataset(path)
    with pytest.raises(DatasetError):
        DatasetWriter(path)  # appending never clobbers a foreign file
    assert h5py.File(path, "r")["x"][2] == 2


# ---------------------------------------------------------------- concurrency and crashes


def test_second_writer_refused_reader_allowed(tmp_path: Path) -> None:
    path = tmp_path / "busy.h5"
    with DatasetWriter(path) as writer:
        writer.append(make(0))
        writer.append(make(1))
        with pytest.raises(RuntimeError, match="another process is writing"):
            DatasetWriter(path)
        live = H5Dataset(path)  # reading while the writer is open
        assert len(live) == 2
        assert_atoms_equal(make(1), live[1])
        writer.append(make(2))
    assert len(H5Dataset(path)) == 3


def test_reader_in_same_process_blocks_writer_clearly(tmp_path: Path) -> None:
    path = tmp_path / "open.h5"
    write_atoms(path, [make(0)])
    ds = H5Dataset(path)
    ds[0]  # holds an HDF5 handle
    with pytest.raises(RuntimeError, match="close the H5Dataset"):
        DatasetWriter(path)
    ds.close()
    with DatasetWriter(path) as writer:
        writer.append(make(1))
    assert len(H5Dataset(path)) == 2


def test_file_written_without_swmr_is_appendable(tmp_path: Path) -> None:
    """A copy made by plain h5py (old superblock, as h5repack writes) still appends."""
    path, plain = tmp_path / "swmr.h5", tmp_path / "plain.h5"
    write_atoms(path, [make(i) for i in range(4)])
    with h5py.File(path, "r") as src, h5py.File(plain, "w") as dst:
        for key in src:
            src.copy(src[key], dst, name=key)
        dst.attrs.update(src.attrs)
    assert plain.read_bytes()[8] == 0  # superblock version 0
    assert len(H5Dataset(plain)) == 4
    with DatasetWriter(plain) as writer:
        writer.append(make(4))
    ds = H5Dataset(plain)
    for i in range(5):
        assert_atoms_equal(make(i), ds[i])
    validate(plain)


WRITER_SCRIPT = (
    textwrap.dedent(
        """
    import sys
    import numpy as np
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from tfn_md.data.hdf5 import DatasetWriter
    """
    )
    + inspect.getsource(make)
    + textwrap.dedent(
        """

    with DatasetWriter(sys.argv[1], append=False) as writer:
        for i in range(10**6):
            writer.append(make(i))
            print(i + 1, flush=True)
    """
    )
)


def _kill_trial(path: Path, rng: random.Random) -> int:
    """Kill a writer mid-stream; check the file; return the number of structures."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    target, printed = rng.randint(1, 80), 0
    try:
        while printed < target:
            line = proc.stdout.readline()
            assert line, "writer died before the kill"
            printed = int(line)
        time.sleep(rng.random() * 0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    printed = max([printed] + [int(x) for x in proc.stdout.read().split()])
    proc.stdout.close()
    ds = H5Dataset(path)
    assert printed <= len(ds) <= printed + 1, (printed, len(ds))
    for i in range(len(ds)):
        assert_atoms_equal(make(i), ds[i])
    validate(path)
    # the killed file can be reopened and appended to
    n = len(ds)
    ds.close()
    with DatasetWriter(path) as writer:
        assert len(writer) == n
        writer.append(make(n))
    ds = H5Dataset(path)
    assert len(ds) == n + 1
    assert_atoms_equal(make(n), ds[n])
    validate(path)
    return n


def test_reading_while_another_process_writes(tmp_path: Path) -> None:
    """Readers open the file again and again during appends: never an error."""
    path = tmp_path / "live.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        for _ in range(3):
            assert proc.stdout.readline(), "writer died"
        seen, deadline = 0, time.monotonic() + 3.0
        while time.monotonic() < deadline:
            with H5Dataset(path) as ds:
                assert len(ds) >= seen
                seen = len(ds)
                assert_atoms_equal(make(seen - 1), ds[seen - 1])
        assert seen > 3
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_sigkill_keeps_committed_structures(tmp_path: Path) -> None:
    rng = random.Random(1234)
    for trial in range(3):
        _kill_trial(tmp_path / f"kill{trial}.h5", rng)


@pytest.mark.slow
def test_sigkill_many_trials(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("TFN_MD_KILL_SEED", "0")))
    for trial in range(int(os.environ.get("TFN_MD_KILL_TRIALS", "30"))):
        _kill_trial(tmp_path / f"kill{trial}.h5", rng)
