"""serially(): MKL products on the calling thread for one call, the caller's setting back
after it (also after an exception); torch's thread count and other threads untouched."""

import threading

import pytest
import torch

from tfn_md.inference.serial_blas import mkl, serially


@pytest.fixture
def mkl_threads():
    """MKL's thread count for the calling thread (its thread-local setting where set)."""
    lib = mkl()
    if lib is None:
        pytest.skip("this torch has no MKL: serially() calls through unchanged")
    return lib.MKL_Get_Max_Threads


def _in_another_thread(function):
    seen = []
    other = threading.Thread(target=lambda: seen.append(function()))
    other.start()
    other.join()
    return seen[0]


def test_one_thread_inside_the_callers_setting_after(mkl_threads):
    torch_threads, before = torch.get_num_threads(), mkl_threads()
    other_before = _in_another_thread(mkl_threads)
    seen = {}

    def work(a, b):
        seen["inside"], seen["other"] = mkl_threads(), _in_another_thread(mkl_threads)
        return a @ b

    a, b = torch.randn(64, 64), torch.randn(64, 48)
    assert torch.equal(serially(work, a, b), a @ b)
    assert seen["inside"] == 1 and seen["other"] == other_before
    assert mkl_threads() == before and torch.get_num_threads() == torch_threads

    def fails():
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        serially(fails)
    assert mkl_threads() == before and torch.get_num_threads() == torch_threads
