import functools
import os
import shutil

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from tfn_md import TFN

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}

# Calculators made by the tests run eagerly unless a test asks for compile=True: compiling
# a random model takes tens of seconds, and the compiled path has its own tests against
# the eager one (tests/test_fast_paths.py).
os.environ.setdefault("TFN_MD_COMPILE", "0")


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


def make_model(species=("H", "C", "O"), dtype=torch.float64, seed=0, **kwargs) -> TFN:
    """A small random-weight model (seeded through a fork of the RNG: no global change)."""
    kwargs = {"channels": 8, "l_max": 2, "layers": 2, "cutoff": 4.0, **kwargs}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TFN(species=list(species), **kwargs)
        # non-trivial E0, scale and gate biases, so tests see every term
        model.e0.uniform_(-2.0, 2.0)
        model.scale.fill_(1.3)
        model.shift.fill_(0.1)
        for nl in model.nonlinearities:
            nl.bias.data.uniform_(-1.0, 1.0)
    return model.to(dtype)


def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


def triclinic_cu(repeat=(1, 1, 1), rattle=0.1, seed=0) -> Atoms:
    """A small triclinic (sheared) Cu cell, smaller than twice a 4-5 A cutoff."""
    atoms = bulk("Cu", "fcc", a=3.6).repeat(repeat)
    cell = atoms.cell.array.copy()
    cell[2] += [0.3, -0.2, 0.1]
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


def random_rotation_np(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


@functools.cache
def compile_works() -> bool:
    """torch.compile on CPU needs a working C++ toolchain; try a trivial function."""
    if not (shutil.which("g++") or shutil.which("c++")):
        return False
    try:
        torch.compile(lambda t: torch.sin(t) * 2)(torch.ones(3))
        return True
    except Exception:
        return False


@pytest.fixture
def compiler():
    """Skip the test where nothing can be compiled (no C++ toolchain)."""
    if not compile_works():
        pytest.skip("torch.compile cannot build CPU kernels here (no C++ toolchain)")
