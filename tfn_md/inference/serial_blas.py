"""Matrix products of one call on one thread, for this calling thread only, restored after.

A small program (a molecule's response: :mod:`tfn_md.inference.programs`) is serial code
except for a few matrix products too large to trace as loops (64 x 64 weights on 16
atoms, ~2e5 multiply-adds each), which it runs as BLAS calls. torch's x86 builds link
MKL, which runs such a call on torch's intra-op threads: the other threads must wake up
for a product of a few microseconds, 5-10 us a call on an idle 2-core machine and far
more when the other core is busy. ethylamine's program (8 such calls) took 0.66 ms a call
at torch's default 2 threads against 0.56 ms at 1; its Langevin MD ran at a median 1092
steps/s with threaded products and 1143 with them serial (alternating in one process).

``serially(f, *args)`` sets MKL's count for the calling thread alone
(``MKL_Set_Num_Threads_Local``, exported by torch's own ``libtorch_cpu``) to 1 for the
duration of ``f`` and puts the caller's value back in a ``finally``. Nothing process-wide
changes: torch's intra-op thread count, OpenMP's settings, MKL's global count and every
other thread are untouched (tests/inference/test_serial_blas.py), and nothing but the
program runs on the thread meanwhile. Where torch has no MKL (ARM, macOS, other BLAS) it
does nothing.
"""

import ctypes
import functools
from pathlib import Path

import torch

__all__ = ["mkl", "serially"]


@functools.cache
def mkl():
    """torch's own library where it exports MKL's service functions, else None (no MKL)."""
    if not torch.backends.mkl.is_available():
        return None
    for path in sorted(Path(torch.__file__).parent.joinpath("lib").glob("*torch_cpu.*")):
        try:
            lib = ctypes.CDLL(str(path))  # already loaded by torch: the same handle
            lib.MKL_Set_Num_Threads_Local.argtypes = [ctypes.c_int]
        except (OSError, AttributeError):
            continue
        lib.MKL_Set_Num_Threads_Local.restype = ctypes.c_int
        return lib
    return None


def serially(function, *args):
    """``function(*args)`` with this thread's MKL products on this thread alone."""
    lib = mkl()
    if lib is None:
        return function(*args)
    previous = lib.MKL_Set_Num_Threads_Local(1)  # the caller's local value (0: none)
    try:
        return function(*args)
    finally:
        lib.MKL_Set_Num_Threads_Local(previous)
