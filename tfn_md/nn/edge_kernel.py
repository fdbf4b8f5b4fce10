"""The edge contraction of the TFN convolution, fused, block-sparse and chunked over edges.

For edges e = (i_e <- j_e) with harmonics y_e, radial weights w_e and sender features
x_{j_e}, the convolution needs, for every path p = (lI, lF, lO) and its output columns k,

    out[i, k, c] = sum_{e: i_e = i} w[e, p, c] sum_{m in lI} A_p[e, m, k] x[j_e, m, c],
    A_p[e] = sum_{mF} y_e[mF] C_p[mF, :, :]

Paths are grouped by their input order lI (one "block" each): a block multiplies only
the 2lI+1 input components it reads (the CG tensors are zero elsewhere), and within a
block the paths sharing an lO take their radial weights by broadcasting, not by a
gather. Written as whole-edge tensor ops this would materialise several [E, K, c]
tensors (1632 values per edge for c = 32, l_max = 2) and spend its time moving them
through memory; :class:`FusedEdgeConv` walks the edges in chunks small enough to stay
in cache, forward and again in backward (recomputing A and the messages), so nothing
of size [E, K, c] is stored. The backward is made of differentiable torch ops, so
double backward (training on forces) works.

The radial weights w_e [P, c] are made inside the same chunks from per-edge inputs by a
:class:`Radial`, in forward and again in backward, so they are never stored for the whole
graph either:

* :class:`MLPRadial`: w = u(r) (W2 SiLU(W1 B(r) + b1) + b2) from the basis B [E, n_basis]
  and envelope u [E] (training, and ``exact`` inference);
* :class:`TableRadial`: w = the cubic Hermite spline of that same function of r, tabulated
  once after training (:mod:`tfn_md.nn.radial_table`), from the lengths r [E]: no MLP.

Memory stays O(E (n_basis + D_F)) and a 100k-atom graph needs no blocking.

Shapes: xt [n, D_in, c] (features, channels last), y [E, D_F], per-edge radial inputs
(chunked with the edges), radial parameters (whole) -> out [n_out, K, c], columns in path
order.
"""

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Block", "EdgePlan", "MLPRadial", "TableRadial", "backward_chunk", "chunk_edges",
           "forward_chunk", "fused_edge_conv"]

CHUNK_ELEMENTS = 1 << 19  # about 2 MB of float32 per [chunk, K, c] tensor


@dataclass(frozen=True)
class Block:
    """Paths with one input order: input rows ``rows``, output columns ``cols``, CG matrix
    ``c2`` [D_F, (2lI+1) * K_block], and groups (p0, p1, q0, q1, 2lO+1) of paths p0..p1
    with equal lO whose columns are q0..q1 within the block."""

    rows: slice
    cols: slice
    c2: Tensor
    groups: tuple


@dataclass(eq=False)
class EdgePlan:
    """The blocks of one convolution, its total output columns, and the chunk bodies a
    ``kernels`` maker of :func:`fused_edge_conv` chose (filled on first use)."""

    blocks: tuple
    n_cols: int
    kernels: dict = field(default_factory=dict)


_unchunked = threading.local()


@contextlib.contextmanager
def unchunked():
    """Within this context (in this thread) every call takes all its edges as one chunk and
    runs the eager chunk bodies: for tracing a whole computation for a compiler, which
    fuses the chunk's work itself."""
    _unchunked.on = True
    try:
        yield
    finally:
        _unchunked.on = False


def tracing_for_compiler() -> bool:
    """True inside :func:`unchunked` (a whole computation is being traced for a compiler)."""
    return getattr(_unchunked, "on", False)


def chunk_edges(n_edges: int, k: int, c: int) -> list[slice]:
    if tracing_for_compiler():  # one chunk, its size left symbolic
        return [slice(0, n_edges)] if n_edges != 0 else []
    size = max(64, CHUNK_ELEMENTS // max(k * c, 1))
    return [slice(s, min(s + size, n_edges)) for s in range(0, n_edges, size)]


# ---- radial weights of a chunk ---------------------------------------------------------

def _silu_grad(pre: Tensor) -> Tensor:
    s = torch.sigmoid(pre)
    return s * (1 + pre * (1 - s))


@dataclass(frozen=True)
class MLPRadial:
    """w = u(r) (W2 SiLU(W1 B + b1) + b2) [e, P c]. Per-edge inputs (B [E, n_basis],
    u [E]); parameters (W1 [h, n_basis], b1 [h], W2 [P c, h], b2 [P c])."""

    n_edge_inputs = 2

    @staticmethod
    def weights(edge, params) -> Tensor:
        (bs, us), (w1, b1, w2, b2) = edge, params
        return torch.addmm(b2, F.silu(torch.addmm(b1, bs, w1.T)), w2.T) * us[:, None]

    @staticmethod
    def backward(edge, params, g_w: Tensor, need: tuple, param_grads: bool):
        """(grads of the per-edge inputs, summed-over-chunk parameter gradient parts)."""
        (bs, us), (w1, b1, w2, b2) = edge, params
        pre = torch.addmm(b1, bs, w1.T)
        h = F.silu(pre)
        g_us = (g_w * torch.addmm(b2, h, w2.T)).sum(1) if need[1] else None
        g_w0 = g_w * us[:, None]
        g_pre = (g_w0 @ w2) * _silu_grad(pre)  # [e, hidden]
        parts = (g_pre.T @ bs, g_pre.sum(0), g_w0.T @ h, g_w0.sum(0)) if param_grads else None
        return (g_pre @ w1, g_us), parts


@dataclass(frozen=True)
class TableRadial:
    """w(r) [e, P c] from a cubic Hermite table: interval k = floor(r / h), t = r / h - k,
    w = ((a3 t + a2) t + a1) t + a0 with coefficients ``coef`` [n_intervals + 1, 4, P c]
    (a0..a3; the last row is zero, for every r beyond the table). Per-edge input r [E];
    parameter ``coef``. The gradient is the spline's own derivative, so forces are exact
    derivatives of the tabulated energy."""

    inv_h: float
    n_edge_inputs = 1

    def _locate(self, r: Tensor, coef: Tensor) -> tuple[Tensor, Tensor]:
        s = r * self.inv_h
        k = s.floor().clamp(0, coef.shape[0] - 1)
        return (s - k)[:, None], coef[k.long()]  # t [e, 1], a [e, 4, P c]

    def weights(self, edge, params) -> Tensor:
        t, a = self._locate(edge[0], params[0])
        w = torch.addcmul(a[:, 2], a[:, 3], t)
        w = torch.addcmul(a[:, 1], w, t)
        return torch.addcmul(a[:, 0], w, t)

    def slopes(self, edge, params) -> Tensor:
        """dw/dr [e, P c]."""
        t, a = self._locate(edge[0], params[0])
        dw = torch.addcmul(a[:, 2], a[:, 3], t, value=1.5)  # (3 a3 t + 2 a2) / 2
        return torch.addcmul(a[:, 1], dw, t, value=2.0) * self.inv_h

    def backward(self, edge, params, g_w: Tensor, need: tuple, param_grads: bool):
        return ((g_w * self.slopes(edge, params)).sum(1),), None


# ---- messages of a chunk, given its radial weights -------------------------------------

def _weighted(msg: Tensor, w: Tensor, groups, out: Tensor | None = None) -> Tensor:
    """msg [e, K_b, c] times each path's weights w [e, P, c], by broadcasting per group,
    written into ``out`` [e, K_b, c] (a view may be given) unless autograd records (then
    a differentiable concatenation)."""
    e, _, c = msg.shape
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return torch.cat(
            [(msg[:, q0:q1].view(e, p1 - p0, m, c) * w[:, p0:p1, None, :]).view(e, q1 - q0, c)
             for p0, p1, q0, q1, m in groups], dim=1)
    out = torch.empty_like(msg) if out is None else out
    for p0, p1, q0, q1, m in groups:
        torch.mul(msg[:, q0:q1].view(e, p1 - p0, m, c), w[:, p0:p1, None, :],
                  out=out[:, q0:q1].view(e, p1 - p0, m, c))
    return out


def _bmm(a: Tensor, b: Tensor) -> Tensor:
    """Per-edge products [e, p, q] @ [e, q, r] -> [e, p, r]. When p, q or r is 1 (outer
    products, dot products) a broadcast is many times faster than a batched GEMM."""
    if a.shape[2] == 1:
        return a * b
    if a.shape[1] == 1:
        return (a.transpose(1, 2) * b).sum(1, keepdim=True)
    if b.shape[2] == 1:
        return (a * b.transpose(1, 2)).sum(2, keepdim=True)
    return torch.bmm(a, b)


def forward_chunk(plan: EdgePlan, radial, ys, xs, edge, params, out=None) -> Tensor:
    """Weighted messages of one chunk of edges [e, K, c] (written into ``out`` if given)."""
    e, c = ys.shape[0], xs.shape[2]
    ws = radial.weights(edge, params).view(e, -1, c)  # [e, P, c]
    parts = []
    for b in plan.blocks:
        a = (ys @ b.c2).view(e, b.rows.stop - b.rows.start, -1)  # [e, dI, Kb]
        msg = _bmm(a.transpose(1, 2), xs[:, b.rows])  # [e, Kb, c]
        parts.append(_weighted(msg, ws, b.groups, None if out is None else out[:, b.cols]))
    return out if out is not None else torch.cat(parts, dim=1)


def backward_chunk(plan: EdgePlan, radial, ys, xs, edge, params, g_msgs, need: tuple,
                    param_grads: bool) -> tuple:
    """Gradients of one chunk from g_msgs = dL/d(weighted messages) [e, K, c]:
    (g_xs [e, D_in, c], g_ys [e, D_F], grads of the per-edge radial inputs, parameter
    gradient parts or None)."""
    e, c = ys.shape[0], xs.shape[2]
    ws = radial.weights(edge, params).view(e, -1, c)
    g_ys, g_xs, g_ws = 0, [], []
    for b in plan.blocks:
        a = (ys @ b.c2).view(e, b.rows.stop - b.rows.start, -1)  # [e, dI, Kb]
        x_b = xs[:, b.rows]  # [e, dI, c]
        g_msg = g_msgs[:, b.cols]  # [e, Kb, c]
        t = _bmm(a.transpose(1, 2), x_b)  # [e, Kb, c] (recomputed)
        prod = g_msg * t
        g_ws += [prod[:, q0:q1].reshape(e, p1 - p0, m, c).sum(2)
                 for p0, p1, q0, q1, m in b.groups]
        g_t = _weighted(g_msg, ws, b.groups)  # [e, Kb, c]
        g_xs.append(_bmm(a, g_t))  # [e, dI, c]
        g_a = _bmm(x_b, g_t.transpose(1, 2))  # [e, dI, Kb]
        g_ys = g_ys + g_a.reshape(e, -1) @ b.c2.T  # [e, D_F]
    g_w = torch.cat(g_ws, dim=1).view(e, -1)  # [e, P c] (blocks hold paths in order)
    g_edge, parts = radial.backward(edge, params, g_w, need, param_grads)
    return torch.cat(g_xs, dim=1), g_ys, g_edge, parts


class FusedEdgeConv(torch.autograd.Function):
    """The edge contraction with the radial weights made inside it, per chunk of edges, in
    forward and again in backward (no [E, P, c] tensor is ever stored). Inputs after the
    constants: ``radial.n_edge_inputs`` per-edge tensors, then the radial parameters."""

    @staticmethod
    def forward(ctx, xt, y, src, dst, plan: EdgePlan, radial, n_out: int,
                kernels: Callable | None, *tensors):
        n_edge = radial.n_edge_inputs
        edge_in, params = tensors[:n_edge], tensors[n_edge:]
        if tracing_for_compiler():  # a compiler traces us: the plain body
            kernels = None
        c = xt.shape[2]
        out = xt.new_zeros(n_out, plan.n_cols, c)
        chunks = chunk_edges(y.shape[0], plan.n_cols, c)
        if kernels is not None and chunks:
            weights = [t.detach() for t in params]
            for sl in chunks:
                args = _padded(chunks[0].stop, y[sl], xt[src[sl]], *(t[sl] for t in edge_in))
                body = kernels(plan, radial, "forward", args, weights)
                out.index_add_(0, dst[sl], body(*args, *weights)[: sl.stop - sl.start])
        else:
            buffer = xt.new_empty(chunks[0].stop if chunks else 0, plan.n_cols, c)
            for sl in chunks:
                e = sl.stop - sl.start
                weighted = forward_chunk(plan, radial, y[sl], xt[src[sl]],
                                          [t[sl] for t in edge_in], params, out=buffer[:e])
                out.index_add_(0, dst[sl], weighted)
        ctx.save_for_backward(xt, y, src, dst, *tensors)
        ctx.plan, ctx.radial, ctx.kernels = plan, radial, kernels
        return out

    @staticmethod
    def backward(ctx, g_out):
        g_out = g_out.contiguous()  # [n, K, c] rows gathered per edge: channels inner
        xt, y, src, dst, *tensors = ctx.saved_tensors
        plan, radial = ctx.plan, ctx.radial
        n_edge = radial.n_edge_inputs
        edge_in, params = tensors[:n_edge], tensors[n_edge:]
        need_edge = ctx.needs_input_grad[8:8 + n_edge]
        param_grads = any(ctx.needs_input_grad[8 + n_edge:])
        g_xt = torch.zeros_like(xt)
        g_y, g_edge = [], [[] for _ in edge_in]
        g_params = None
        chunks = chunk_edges(y.shape[0], plan.n_cols, xt.shape[2])
        kernels = None if torch.is_grad_enabled() or param_grads else ctx.kernels
        weights = [t.detach() for t in params]
        for sl in chunks:
            e = sl.stop - sl.start
            if kernels is not None:
                args = _padded(chunks[0].stop, y[sl], xt[src[sl]], *(t[sl] for t in edge_in),
                               g_out[dst[sl]])
                body = kernels(plan, radial, "backward", args, weights, need_edge)
                # copies: a compiled output may be a view of a larger buffer, which a kept
                # view would hold alive for the whole backward pass
                g_xs, g_ys, *g_es = (None if t is None else t[:e].clone()
                                     for t in body(*args, *weights))
                parts = None
            else:
                g_xs, g_ys, g_es, parts = backward_chunk(
                    plan, radial, y[sl], xt[src[sl]], [t[sl] for t in edge_in], params,
                    g_out[dst[sl]], need_edge, param_grads)
            g_xt.index_add_(0, src[sl], g_xs)  # in place: O(E) not O(E n)
            g_y.append(g_ys)
            for acc, g in zip(g_edge, g_es):
                if g is not None:
                    acc.append(g)
            if param_grads:
                g_params = parts if g_params is None else tuple(
                    g + q for g, q in zip(g_params, parts))
        g_y = torch.cat(g_y) if g_y else torch.zeros_like(y)
        g_edge = [torch.cat(acc) if acc else torch.zeros_like(t) if need else None
                  for acc, t, need in zip(g_edge, edge_in, need_edge)]
        if param_grads and g_params is None:
            g_params = tuple(torch.zeros_like(t) for t in params)
        return (g_xt, g_y, None, None, None, None, None, None, *g_edge,
                *(g_params or (None,) * len(params)))


def _padded(size: int, *tensors: Tensor) -> list[Tensor]:
    """Chunk inputs zero-padded to ``size`` edges (one compiled shape for every chunk; padded
    edges have zero harmonics and features, so they add exact zeros)."""
    e = tensors[0].shape[0]
    tensors = [t.detach() for t in tensors]  # one compiled variant (requires_grad is guarded)
    if e == size:
        return tensors
    return [torch.cat([t, t.new_zeros(size - e, *t.shape[1:])]) for t in tensors]


def fused_edge_conv(xt: Tensor, y: Tensor, edge_inputs: tuple, params: tuple, radial,
                    src: Tensor, dst: Tensor, plan: EdgePlan, n_out: int | None = None,
                    kernels: Callable | None = None) -> Tensor:
    """See the module docstring: [n, D_in, c], [E, D_F], the radial's per-edge inputs and
    parameters -> [n_out, K, c] (``dst`` indexes the n_out output rows; default n_out = n).
    ``kernels``: None runs the chunk bodies as written; else
    ``kernels(plan, radial, kind, args, weights[, need])`` returns the body to run for
    chunks shaped like ``args`` (:func:`tfn_md.inference.chunks.compiled_chunk`: compiled
    where that is faster). Used for inference only: forward, and backward without a graph;
    training keeps the eager, twice-differentiable code."""
    return FusedEdgeConv.apply(xt, y, src, dst, plan, radial,
                               xt.shape[0] if n_out is None else n_out, kernels,
                               *edge_inputs, *params)
