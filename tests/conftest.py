"""Fixtures shared by all tests (helpers they share are in tests/helpers.py)."""

import functools
import os
import shutil

import pytest
import torch

# Calculators made by the tests run eagerly unless a test asks for compile=True: compiling
# a random model takes tens of seconds, and the compiled path has its own tests against
# the eager one (tests/inference/test_fast_paths.py).
os.environ.setdefault("TFN_MD_COMPILE", "0")


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


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
