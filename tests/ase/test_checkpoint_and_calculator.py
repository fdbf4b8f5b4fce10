"""Checkpoints round-trip through torch.load(weights_only=True); the calculator keeps its
own dtype/device and never changes torch's global state; the CLI answers."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers import ethanol, make_model, triclinic_cu
from tfn_md import TFN, TFNCalculator, load_potential, save_potential


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_checkpoint_round_trip(tmp_path, dtype):
    model = make_model(dtype=dtype, zbl=True)
    path = tmp_path / "model.pt"
    save_potential(model, path)
    raw = torch.load(path, weights_only=True)  # no pickled code needed
    assert raw["format"] == "tfn_md-potential" and raw["dtype"] == str(dtype)[6:]
    loaded = load_potential(path)
    assert isinstance(loaded, TFN) and loaded.e0.dtype == dtype
    assert loaded.config == model.config
    atoms = ethanol()
    atoms.calc = TFNCalculator(model)
    e1, f1 = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = TFNCalculator(str(path))
    assert atoms.get_potential_energy() == e1
    assert np.array_equal(atoms.get_forces(), f1)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temporary file


def test_one_line_model_and_dtype():
    model = TFN(species=["H", "C", "O"], channels=32, l_max=2, layers=2, cutoff=5.0)
    assert model.e0.dtype == torch.get_default_dtype()
    assert model.to(torch.float64).embedding.weight.dtype == torch.float64


def test_calculator_leaves_global_state_alone():
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    rng_state = torch.get_rng_state()
    model = make_model(dtype=torch.float32)
    atoms = ethanol()
    atoms.calc = TFNCalculator(model, dtype="float64")
    atoms.get_forces()
    assert torch.get_default_dtype() == dtype
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert atoms.calc.model.e0.dtype == torch.float64 and model.e0.dtype == torch.float32


def test_vectors_property():
    atoms = ethanol()
    atoms.calc = TFNCalculator(make_model())
    vectors = atoms.calc.get_property("vectors", atoms)
    assert vectors.shape == (len(atoms), 3) and np.abs(vectors).max() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("system", ["ethanol", "cu"])
@pytest.mark.parametrize("options", [{"exact": True, "compile": False}, {"compile": False},
                                     {"compile": True}, {"compile": False, "chunks": True}],
                         ids=["exact", "tables", "compiled", "chunks"])
def test_cuda_matches_cpu(options, system):
    """Every inference path on the GPU (float64) against the same path on the CPU (the
    chunks against the CPU's eager tables, the same arithmetic): energies, forces and
    (periodic Cu) stress."""
    options = dict(options)
    chunks = options.pop("chunks", False)
    model = make_model(species=["Cu"]) if system == "cu" else make_model()
    atoms = triclinic_cu((2, 2, 2)) if system == "cu" else ethanol()
    gpu = TFNCalculator(model, device="cuda", **options)
    if chunks:
        gpu.engine._compile_chunks()  # the compiled edge-kernel chunks of large systems
    atoms.calc = gpu
    e_gpu, f_gpu = atoms.get_potential_energy(), atoms.get_forces()
    s_gpu = atoms.get_stress() if system == "cu" else None
    atoms.calc = TFNCalculator(model, **options)
    assert abs(atoms.get_potential_energy() - e_gpu) < 1e-9
    assert np.abs(atoms.get_forces() - f_gpu).max() < 1e-9
    if s_gpu is not None:
        assert np.abs(atoms.get_stress() - s_gpu).max() < 1e-9


def test_cli_help_and_version():
    run = [sys.executable, "-m", "tfn_md.cli"]
    out = subprocess.run(run + ["--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("tfn_md ")
    out = subprocess.run(run + ["--help"], capture_output=True, text=True, check=True)
    assert "usage: tfn-md" in out.stdout
