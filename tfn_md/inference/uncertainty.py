"""Uncertainty of a TFN potential: the energy's from the last layer's prediction rigidity,
the forces' from a shallow ensemble of K energy heads on shared features.

Energy (a model with ``llpr``; Bigi et al. 2024, "A prediction rigidity formalism for
low-cost uncertainties in trained neural networks"): the energy is linear in the readout
weights w, E = scale w · f + ..., f = sum_i (z_i - z_i,isolated) [c] (the pooled readout
inputs). Treating w as uncertain with covariance C / scale^2,

    sigma_E = sqrt(f^T C f),   C = alpha^2 scale^2 (F^T F + varsigma^2 I)^-1     [c, c]

where the rows of F [B, c] are the training structures' scale f_b / N_b (the loss fits the
energy per atom), alpha and varsigma fitted to the energy errors of calibration structures
(:func:`tfn_md.train.uncertainty.calibrate_llpr`). sigma_E is large where f leaves the span
of the training features (new bonds, atoms pushed together, new coordination), not where
a constant offset between heads says so, and costs one [c] x [c, c] x [c] product per call.
Models without ``llpr`` report the heads' energy spread (below) instead.

Forces: a model with ``energy_heads = K > 1`` reads its last layer's l = 0 features z_i [n, c]
with K linear heads w_k (``TFN.energy_readout``, [K, c]):

    E_k      = sum_i (scale * w_k · z_i + shift + E0[Z_i])     energy of head k  [n_graphs, K]
    E        = (1/K) sum_k E_k                                  the energy (mean)
    sigma_E  = sqrt((1/K) sum_k (E_k - E)^2)                    the heads' energy spread, eV
    F_k      = -dE_k/dR,  F = (1/K) sum_k F_k = -dE/dR          [K, n, 3], [n, 3]
    sigma_Fi = sqrt((1/K) sum_k |F_k,i - F_i|^2)                per-atom force spread, eV/A

The heads cost K dot products per atom: the energy, the mean forces (one backward pass
of E) and sigma_E cost what a single-head model costs. (The heads' energy spread is
dominated by a constant offset between heads times the number of atoms: on ethanol it
stays at 124-135 meV at every geometry, the equilibrium included; see
``benchmarks/uncertainty_methods.py``.) sigma_Fi needs the K per-head
forces, K vector-Jacobian products (K backward passes through one forward graph,
:func:`ensemble_response`); callers ask for it only when they need it.

The training half (the NLL loss, head initialisation and calibration, per-frame
statistics) is :mod:`tfn_md.train.uncertainty`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import keys
from ..graph import Graph
from .response import strained_graph, stress_from_strain_gradient

__all__ = ["energy_spread", "ensemble_response", "spread_of"]


def spread_of(values: Tensor, dim: int) -> Tensor:
    """Population standard deviation over the heads axis ``dim`` (1/K, not 1/(K-1))."""
    return (values - values.mean(dim, keepdim=True)).square().mean(dim).sqrt()


def energy_spread(model, out: dict, batch: Tensor, n_graphs: int) -> Tensor:
    """The energy uncertainty [n_graphs] (eV) of a model's outputs ``out``: sigma_E of the
    prediction rigidity where the model has it (``llpr``; from the readout inputs [n, c] of
    the atoms of ``batch`` [n]), else the spread of its energy heads."""
    if model.config.llpr:
        z = out[keys.READOUT_INPUTS]
        pooled = z.new_zeros(n_graphs, z.shape[1]).index_add_(0, batch, z)  # [B, c]
        return model.energy_uncertainty(pooled)
    return spread_of(out[keys.ENERGY_HEADS], 1)


def ensemble_response(model, graph: Graph, stress: bool = False,
                      **model_kwargs) -> dict[str, Tensor]:
    """The model's outputs on ``graph`` (energy-only forward) plus ``forces`` (the mean),
    ``forces_heads`` [K, n, 3], ``forces_spread`` [n], ``energy_spread`` [n_graphs] and,
    with ``stress``, the mean ``stress`` [n_graphs, 3, 3] (as
    :func:`tfn_md.inference.response.compute_response`): one forward pass and K backward passes (one
    per head energy)."""
    strained, inputs = strained_graph(graph, True, stress)
    out = model(strained, energy_only=True, **model_kwargs)
    heads = out[keys.ENERGY_HEADS]  # [B, K]
    k = heads.shape[1]
    # one vector-Jacobian product per head (the edge kernel's custom backward has no
    # batching rule for is_grads_batched): K backward passes through one forward graph
    grads = [torch.autograd.grad(heads[:, h].sum(), inputs, retain_graph=h < k - 1,
                                 allow_unused=True) for h in range(k)]
    grads = [[torch.zeros_like(x) if g is None else g for g, x in zip(gs, inputs)]
             for gs in grads]
    forces_heads = -torch.stack([g[0] for g in grads])  # [K, n, 3]
    forces = forces_heads.mean(0)  # [n, 3]
    out[keys.FORCES] = forces
    out[keys.FORCES_HEADS] = forces_heads
    out[keys.FORCES_SPREAD] = (forces_heads - forces).square().sum(-1).mean(0).sqrt()  # [n]
    out[keys.ENERGY_SPREAD] = energy_spread(model, out, graph.batch, graph.n_graphs)  # [B]
    if stress:
        mean_grad = torch.stack([g[1] for g in grads]).mean(0)  # [B, 3, 3]
        out[keys.STRESS] = stress_from_strain_gradient(mean_grad, graph)
    return out
