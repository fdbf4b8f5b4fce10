"""The examples run (quick mode), and the README's main command works."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(script, tmp_path, *args):
    return subprocess.run([sys.executable, str(ROOT / "examples" / script), "--quick", *args],
                          cwd=tmp_path, check=True, capture_output=True, text=True, timeout=600)


def test_train_from_hdf5(tmp_path):
    out = _run("train_from_hdf5.py", tmp_path, "--out", str(tmp_path / "run"))
    assert (tmp_path / "run" / "run" / "best.pt").exists()
    assert (tmp_path / "run" / "water_md.traj").exists()
    assert "forces" in out.stdout


def test_md_ethanol_with_shipped_potential(tmp_path):
    out = _run("md_ethanol.py", tmp_path, "--out", str(tmp_path / "eth"))
    assert (tmp_path / "eth.traj").exists() and (tmp_path / "eth.png").exists()
    assert "'frames_with_changed_bonds': 0" in out.stdout


def test_relax_cu_cell_with_shipped_potential(tmp_path):
    out = _run("relax_cu_cell.py", tmp_path)
    assert "lattice constant: TFN" in out.stdout


def test_readme_main_command(tmp_path):
    cmd = [sys.executable, "-m", "tfn_md.cli", "md", "--potential", "ethanol-gfn2", "--molecule",
           "CH3CH2OH", "--steps", "100", "-o", str(tmp_path / "eth.traj")]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    assert '"steps": 100' in out.stdout and (tmp_path / "eth.traj").exists()


def test_gpu_check_without_cuda_says_so_and_skips(tmp_path):
    """The prepared GPU check (benchmarks/gpu_check.py) on a machine without CUDA: a clear
    message, a CPU smoke test, exit code 0 and its report under --out."""
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available: this is the check's no-GPU path")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "CUDA is not available: the GPU sections are skipped" in run.stdout
    assert "ethanol-gfn2 on the CPU: E = " in run.stdout
    assert (tmp_path / "gpu_check.txt").read_text().strip() == run.stdout.strip()
