"""The edge kernel's chunk bodies compiled with torch.compile, for systems too large for
one whole program (:mod:`tfn_md.inference.compiled`).

:func:`compiled_chunk` is the ``kernels`` maker of
:func:`tfn_md.nn.edge_kernel.fused_edge_conv`: for chunks shaped like the first chunk's
inputs it compiles the chunk body (forward, or backward without a graph), checks it once
against the eager body (:mod:`tfn_md.inference.program_check`'s tolerance, as whole
programs are checked), times both and keeps the faster for all later calls of that shape.
"""

import time
import types
import warnings

import torch
from torch import Tensor

from ..nn.edge_kernel import EdgePlan, backward_chunk, forward_chunk
from .program_check import TOLERANCE, compare

__all__ = ["AUTOTUNE", "compiled_chunk"]

AUTOTUNE = True  # keep the eager body where it is faster (False: always the compiled one)


def compiled_chunk(plan: EdgePlan, radial, kind: str, args: list, weights: list,
                   need: tuple = (True, True)):
    """The chunk body ``kind`` ("forward" or "backward") of ``plan`` for chunks shaped like
    ``args`` (the first chunk's inputs), compiled with torch.compile, or left eager where
    compiling did not make it faster: both are timed on ``args`` (after one call, which
    compiles) and the faster is kept for all later calls. ``plan.kernels`` maps
    (kind, radial, chunk size, need) to (body, compiled?)."""
    key = (kind, radial, args[0].shape[0], tuple(need))
    n_edge = radial.n_edge_inputs
    if key not in plan.kernels:
        if kind == "forward":
            def body(ys, xs, *rest):
                return forward_chunk(plan, radial, ys, xs, rest[:n_edge], rest[n_edge:])
        else:
            def body(ys, xs, *rest):
                g_xs, g_ys, g_es, _ = backward_chunk(
                    plan, radial, ys, xs, rest[:n_edge], rest[n_edge + 1:], rest[n_edge],
                    need, False)
                return (g_xs, g_ys, *g_es)
        # torch.compile caches per code object (at most 8 variants): give this body its own
        compiled = torch.compile(types.FunctionType(body.__code__.replace(), body.__globals__,
                                                    body.__name__, None, body.__closure__),
                                 dynamic=False)

        def seconds(fn):
            fn(*args, *weights)
            t = time.perf_counter()
            for _ in range(3):
                fn(*args, *weights)
            return time.perf_counter() - t

        try:
            t_compiled = seconds(compiled)
            problem = compare(_outputs(compiled(*args, *weights)),
                              _outputs(body(*args, *weights)), TOLERANCE[args[0].dtype])
            if problem is not None:  # checked once against the eager body, as programs are
                raise RuntimeError(f"it disagrees with the eager kernel: {problem}")
        except Exception as err:  # no C++ toolchain, unsupported platform, wrong code, ...
            warnings.warn(f"torch.compile of the edge kernel failed ({type(err).__name__}: "
                          f"{err}); using the eager kernel", RuntimeWarning, stacklevel=2)
            t_compiled = float("inf")
        faster = t_compiled < float("inf") and (not AUTOTUNE or t_compiled < seconds(body))
        plan.kernels[key] = (compiled, True) if faster else (body, False)
    return plan.kernels[key][0]


def _outputs(out) -> list[Tensor]:
    """A chunk body's outputs as a list of tensors (None gradients left out)."""
    return [t for t in (out if isinstance(out, tuple) else (out,)) if t is not None]
