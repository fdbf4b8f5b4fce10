"""The training step compiled: loss and weight gradients of a batch as one program.

Training on forces needs the gradient of F = -dE/dx with respect to the weights, a double
backward. torch.compile cannot differentiate through a double backward, and a traced
"energy and forces" graph cannot be differentiated again either (``make_fx`` drops the
second-order terms of operations whose derivative reads their own output, e.g. sqrt and
sigmoid: pytorch/pytorch#175477). So the whole step

    (weights, buffers, batch, labels) -> (L, dL/dweights)

with L the loss of :mod:`tfn_md.train.losses` (F and the stress by a first backward with
create_graph, dL/dweights by a second one) is traced into one plain graph of aten
operations (``torch.fx.experimental.proxy_tensor.make_fx``, symbolic shapes: any number of
atoms, edges and structures) and compiled by Inductor as a function without autograd
(``torch.compile(dynamic=True)``). The edge kernel runs as one chunk when traced
(:func:`tfn_md.nn.edge_kernel.unchunked`), so Inductor fuses it. Labelled items count
through their masks (no data-dependent shapes); the ``energy_nll`` term, whose gradient
reaches only the heads' readout (it reads detached features), is added eagerly.

Safety: the first batch of each kind (which labels, which outputs) is computed both ways;
compiled gradients that differ from the eager ones by more than the dtype's tolerance
(relative norm), or any error while tracing or compiling, give a warning and that kind of
batch runs eagerly from then on. In float32 a difference above the tolerance is judged
against the same eager step in float64 first: near a minimum (a retraining's start) the
gradient is small beside the rounding of its terms, and float32 alone cannot tell a
compiled program that rounds differently from a wrong one; the program is kept where its
error against float64 is at most ``_ROUNDING`` times the eager float32 step's. Compiling
takes 0.5-2.5 min each time a training starts on 2 CPU cores;
``benchmarks/bench_train.py`` measures the step.
"""

import warnings

import torch
from torch import Tensor

from .. import keys
from ..data.loader import Targets
from ..graph import Graph
from ..inference.response import compute_response
from ..nn.edge_kernel import unchunked
from .losses import differences, needs, terms

__all__ = ["CompiledStep"]

_TOL = {torch.float32: 1e-4, torch.float64: 1e-9}  # relative norm of the gradient difference
_ROUNDING = 10.0  # compiled float32 error / eager float32 error (both against float64) allowed


def _graph_tensors(graph: Graph) -> tuple:
    return (graph.numbers, graph.positions, graph.cell, graph.batch, graph.edge_index,
            graph.shifts, graph.node_scalars, graph.charge)


def masked_loss(out: dict, targets: Targets, weights, counts: Tensor, graph: Graph) -> Tensor:
    """sum_t w_t sum_{labelled} |r|^2 / (components_t count_t): the loss of
    :func:`tfn_md.train.trainer.batch_loss` without ``energy_nll``, labelled items picked
    by multiplying with their masks; ``counts`` [terms] (>= 1)."""
    loss = out[keys.ENERGY].new_zeros(())
    for k, term in enumerate(t for t in terms(weights) if t.name in targets):
        diff = differences(term, out, targets, graph).reshape(-1, term.components)
        mask = targets[f"{term.name}_mask"].to(diff.dtype)
        sq = (diff.square().sum(1) * mask).sum()
        loss = loss + term.weight * sq / term.components / counts[k]
    return loss


class CompiledStep:
    """Loss and weight gradients of a batch for one model and one loss configuration,
    traced and compiled once per kind of batch (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, weights, eager_loss):
        """``eager_loss(graph, targets, counts)``: the batch's loss, eagerly (a tensor with
        its graph: :func:`tfn_md.train.trainer.batch_loss`), for the batches and kinds
        that are not compiled and for the check of the first."""
        self.model, self.weights, self.eager_loss = model, weights, eager_loss
        self.programs: dict = {}  # kind -> compiled callable, or None: eager

    def accumulate(self, graph: Graph, targets: Targets, counts: dict) -> float:
        """Add dL/dweights of this batch to the weights' ``.grad`` -> L. ``counts``: the
        labelled items of each term (:func:`tfn_md.train.trainer.label_counts`, over all
        processes under data parallelism)."""
        names = [t.name for t in terms(self.weights) if t.name in targets]
        kind = (tuple(names), tuple(sorted(targets.per_atom & set(names))),
                graph.node_scalars is not None, graph.charge is not None,
                graph.positions.dtype)
        program = self.programs.get(kind, False)
        # sizes 0 and 1 are specialised by torch.compile (a new program each, and Inductor's
        # CPU code for scatters into one structure fails): such rare batches run eagerly
        small = min(graph.n_graphs, graph.n_atoms, graph.edge_index.shape[1]) < 2
        if program is False and not small:
            return self._first(kind, graph, targets, counts)
        if program in (None, False) or small:
            loss = self.eager_loss(graph, targets, counts)
            loss.backward()
            return float(loss.detach())
        try:
            loss, grads, readout, energy = program(*self._inputs(graph, targets, names, counts))
        except Exception as err:  # noqa: BLE001 - a recompilation for new shapes failed
            self._give_up(kind, err)
            return self.accumulate(graph, targets, counts)
        for p, g in zip(self.model.parameters(), grads):
            p.grad.add_(g)
        return float(loss) + self._nll(graph, targets, readout, energy)

    def _give_up(self, kind, err: Exception) -> None:
        self.programs[kind] = None
        warnings.warn(f"the compiled training step failed ({type(err).__name__}: "
                      f"{str(err)[:300]}); training continues without compiling",
                      stacklevel=4)

    def _nll_loss(self, graph, targets, readout, energy) -> Tensor | None:
        """The weighted energy_nll term from the program's detached outputs (its gradient
        reaches the heads' readout only), or None without it."""
        w = getattr(self.weights, "energy_nll", 0.0)
        if not (w > 0 and keys.ENERGY in targets):
            return None
        from .uncertainty import energy_nll

        return w * energy_nll(self.model, {keys.READOUT_INPUTS: readout, keys.ENERGY: energy},
                              targets, graph)

    def _nll(self, graph, targets, readout, energy) -> float:
        nll = self._nll_loss(graph, targets, readout, energy)
        if nll is None:
            return 0.0
        nll.backward()
        return float(nll.detach())

    def _inputs(self, graph, targets, names, counts: dict) -> tuple:
        """The program's inputs; ``counts`` become a tensor [terms] (each >= 1)."""
        m = self.model
        labels = {k: targets[k] for n in names for k in (n, f"{n}_mask")}
        n = torch.tensor([max(float(counts[k]), 1.0) for k in names], dtype=graph.positions.dtype)
        return ([p.detach() for p in m.parameters()], list(m.buffers()),
                m.species_index(graph.numbers), *_graph_tensors(graph), labels, n)

    def _first(self, kind, graph, targets, counts) -> float:
        """The eager step of this batch (its gradients kept); the compiled one computed
        beside it and kept for later batches only if its gradients agree."""
        params = list(self.model.parameters())
        before = [p.grad.detach().clone() for p in params]
        loss = self.eager_loss(graph, targets, counts)
        loss.backward()
        eager = torch.cat([(p.grad - b).flatten() for p, b in zip(params, before)])
        self.programs[kind] = None  # eager unless everything below succeeds
        try:
            inputs = self._inputs(graph, targets, list(kind[0]), counts)
            program = torch.compile(self._trace(kind, inputs), dynamic=True)
            _, grads, readout, energy = program(*inputs)
            nll = self._nll_loss(graph, targets, readout, energy)
            if nll is not None:  # the eager gradients include it
                extra = torch.autograd.grad(nll, params, allow_unused=True)
                grads = [g if e is None else g + e for g, e in zip(grads, extra)]
            compiled = torch.cat([g.flatten() for g in grads])
        except Exception as err:  # noqa: BLE001 - any failure: train eagerly, say why
            self._give_up(kind, err)
            return float(loss.detach())
        diff = float((compiled - eager).norm() / eager.norm().clamp_min(1e-30))
        tol = _TOL.get(graph.positions.dtype, 1e-4)
        if not diff <= tol and graph.positions.dtype == torch.float32:
            exact = self._float64_gradient(graph, targets, counts)
            rounding = float((eager.double() - exact).norm())
            if float((compiled.double() - exact).norm()) <= _ROUNDING * rounding:
                diff = tol  # the eager float32 step is off by as much
        if not diff <= tol:
            warnings.warn(f"the compiled training step's gradients differ from the eager "
                          f"ones by {diff:.3g} (relative, allowed {tol:g}); training continues "
                          "without compiling", stacklevel=3)
        else:
            self.programs[kind] = program
        return float(loss.detach())

    def _float64_gradient(self, graph, targets, counts) -> Tensor:
        """dL/dweights of the eager step in float64 (the model converted and back: float32
        -> float64 -> float32 is exact, and ``.grad`` is left as it was), flattened."""
        params = list(self.model.parameters())
        dtype = params[0].dtype
        grads = [p.grad for p in params]
        self.model.to(torch.float64)
        try:
            loss = self.eager_loss(graph.to(graph.positions.device, torch.float64),
                                   targets.to(graph.positions.device, torch.float64), counts)
            exact = torch.autograd.grad(loss, params, allow_unused=True)
        finally:
            self.model.to(dtype)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
        return torch.cat([(torch.zeros_like(p, dtype=torch.float64) if g is None else g)
                          .flatten() for p, g in zip(params, exact, strict=True)])

    def _trace(self, kind: tuple, inputs: tuple) -> torch.fx.GraphModule:
        from torch.func import functional_call
        from torch.fx.experimental.proxy_tensor import make_fx

        model, weights = self.model, self.weights
        per_atom = frozenset(kind[1])
        names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
        probe = Targets({name: None for name in kind[0]}, per_atom=per_atom)
        need = needs(weights, probe)

        def step(params, buffers, species, numbers, positions, cell, batch, edge_index,
                 shifts, node_scalars, charge, labels, counts):
            params = [p.detach().requires_grad_(True) for p in params]
            state = dict(zip(names, [*params, *buffers]))
            # n_graphs from a shape, so that it stays symbolic (any batch size)
            g = Graph(numbers, positions, cell, batch, edge_index, shifts, cell.shape[0],
                      node_scalars, charge)

            def call(strained, **kwargs):
                return functional_call(model, state, (strained,), {**kwargs, "species": species})

            with unchunked():  # both backward passes too: every size stays symbolic
                out = compute_response(call, g, forces=need["forces"], stress=need["stress"],
                                       training=True, energy_only=not need["vectors"])
                loss = masked_loss(out, Targets(labels, per_atom=per_atom), weights, counts, g)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            grads = [torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads)]
            readout = out.get(keys.READOUT_INPUTS, out[keys.ENERGY])
            return loss.detach(), [gr.detach() for gr in grads], readout.detach(), \
                out[keys.ENERGY].detach()

        return make_fx(step, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)
