"""What a user installs: the wheel built from the checkout, installed into a fresh virtual
environment outside the checkout, imports every module of the package and runs the CLI.
(pytest run from the checkout imports the checkout's files, which would hide a package
that pyproject.toml forgets to list.)"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the fresh environment sees nothing of this one's settings (a PYTHONPATH that names this
# environment's site-packages, as LAMMPS' --env lines do, would import its tfn_md)
CLEAN = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "VIRTUAL_ENV")}


def package_modules() -> list[str]:
    """Every module of the checkout's package, dotted (subpackages by their __init__)."""
    names = []
    for path in sorted((ROOT / "tfn_md").rglob("*.py")):
        parts = ["tfn_md", *path.relative_to(ROOT / "tfn_md").with_suffix("").parts]
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_wheel_installs_every_module_and_the_cli(tmp_path):
    # build from a copy of what git tracks in the checkout: no stray local files help
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "pyproject.toml", "README.md", "LICENSE",
                              "tfn_md", "potentials"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in tracked:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(wheels), str(src)], check=True)
    (wheel,) = wheels.glob("tfn_md-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--quiet", "--no-deps", str(wheel)], check=True, env=CLEAN)
    # the dependencies (torch, ase, ...) come from this environment's site-packages, after
    # the fresh environment's own (where the wheel's tfn_md is); .pth files there (such as
    # an editable install of the checkout) are not processed
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                           "'purelib'))"], capture_output=True, text=True, check=True,
                          env=CLEAN)
    Path(site.stdout.strip(), "dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n")

    modules = package_modules()
    assert {"tfn_md.inference", "tfn_md.ase", "tfn_md.lammps", "tfn_md.learn"} <= set(modules)
    code = (
        "import importlib, pathlib, sys, tfn_md\n"
        f"venv = pathlib.Path({str(venv)!r}).resolve()\n"
        "assert venv in pathlib.Path(tfn_md.__file__).resolve().parents, tfn_md.__file__\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as err:  # an engine whose optional extra is missing\n"
        "        if not (name.startswith('tfn_md.engines.') and 'pip install' in str(err)):\n"
        "            raise\n"
        "from tfn_md import load_potential\n"
        "print(len(sys.modules), load_potential('ethanol-gfn2').config.channels)\n"
    )
    out = tmp_path / "elsewhere"
    out.mkdir()
    run = subprocess.run([str(python), "-c", code], cwd=out, capture_output=True, text=True,
                         env=CLEAN)
    assert run.returncode == 0, run.stderr[-3000:]
    cli = subprocess.run([str(venv / "bin" / "tfn-md"), "--help"], cwd=out,
                         capture_output=True, text=True, env=CLEAN)
    assert cli.returncode == 0, cli.stderr[-3000:]
    for command in ("md", "relax", "train", "export-lammps", "data", "learn", "paper", "check"):
        assert command in cli.stdout, f"tfn-md --help lacks {command}"
    template = subprocess.run([str(venv / "bin" / "tfn-md"), "learn", "--template"], cwd=out,
                              capture_output=True, text=True, env=CLEAN)
    assert template.returncode == 0 and "[explore]" in template.stdout, template.stderr
