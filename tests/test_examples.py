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
