"""Uncertainty of a TFN potential from a shallow ensemble: K energy heads on shared features.

A model with ``energy_heads = K > 1`` reads its last layer's l = 0 features z_i [n, c]
with K linear heads w_k (``TFN.energy_readout``, [K, c]):

    E_k      = sum_i (scale * w_k · z_i + shift + E0[Z_i])     energy of head k  [n_graphs, K]
    E        = (1/K) sum_k E_k                                  the energy (mean)
    sigma_E  = sqrt((1/K) sum_k (E_k - E)^2)                    energy spread, eV
    F_k      = -dE_k/dR,  F = (1/K) sum_k F_k = -dE/dR          [K, n, 3], [n, 3]
    sigma_Fi = sqrt((1/K) sum_k |F_k,i - F_i|^2)                per-atom force spread, eV/A

The heads cost K dot products per atom: the energy, the mean forces (one backward pass
of E) and sigma_E cost what a single-head model costs. sigma_Fi needs the K per-head
forces, K vector-Jacobian products (K backward passes through one forward graph,
:func:`ensemble_response`); callers ask for it only when they need it.

Training (Kellner & Ceriotti, "Uncertainty quantification by direct propagation of
shallow ensembles", 2024, with the mean kept out of it): the mean is trained by the
usual squared errors, the spread by the Gaussian negative log-likelihood of the energy
per atom, e = E/N,

    NLL_b = 1/2 [ (e_b - e*_b)^2 / s_b^2 + log s_b^2 ],    s_b^2 = var_k(e_k,b) + s0^2

with the mean e_b and the features z detached (:func:`energy_nll`): the NLL moves only
the heads' deviations from their mean (a shift of all w_k together leaves s_b
unchanged, so the mean head w̄ gets no gradient from it), and cannot trade accuracy of
the mean for a larger spread. s0 = 0.1 meV/atom keeps s_b^2 > 0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from . import keys
from .graph import Graph

__all__ = ["S0", "energy_nll", "ensemble_response", "init_heads_from", "spearman",
           "spread_of"]

S0 = 1e-4  # eV/atom: floor of the predicted energy spread in the NLL


def spread_of(values: Tensor, dim: int) -> Tensor:
    """Population standard deviation over the heads axis ``dim`` (1/K, not 1/(K-1))."""
    return (values - values.mean(dim, keepdim=True)).square().mean(dim).sqrt()


def energy_nll(model, out: dict, targets: dict, graph: Graph) -> Tensor:
    """Mean over labelled structures of the Gaussian NLL of the energy per atom (module
    docstring), with s_b^2 from the heads' deviations on detached features; 0 if none."""
    mask = targets[f"{keys.ENERGY}_mask"]  # [B]
    z = out[keys.READOUT_INPUTS].detach()  # [n, c]
    pooled = z.new_zeros(graph.n_graphs, z.shape[1]).index_add_(0, graph.batch, z)  # [B, c]
    w = model.energy_readout.weight  # [K, c]
    deviation = model.scale * pooled @ (w - w.mean(0, keepdim=True)).T  # [B, K] eV
    n_atoms = torch.bincount(graph.batch, minlength=graph.n_graphs).to(z.dtype)  # [B]
    var = deviation.square().mean(1) / n_atoms**2 + S0**2  # [B] (eV/atom)^2
    r = (out[keys.ENERGY].detach() - targets[keys.ENERGY]) / n_atoms  # [B] eV/atom
    nll = 0.5 * (r.square() / var + var.log())
    if not mask.any():
        return nll.sum() * 0.0
    return nll[mask].mean() - math.log(S0)  # shifted by a constant: >= 0 near s_b = s0


def ensemble_response(model, graph: Graph, stress: bool = False,
                      **model_kwargs) -> dict[str, Tensor]:
    """The model's outputs on ``graph`` (energy-only forward) plus ``forces`` (the mean),
    ``forces_heads`` [K, n, 3], ``forces_spread`` [n], ``energy_spread`` [n_graphs] and,
    with ``stress``, the mean ``stress`` [n_graphs, 3, 3] (as
    :func:`tfn_md.response.compute_response`): one forward pass and K backward passes (one
    per head energy)."""
    from dataclasses import replace

    positions = graph.positions.detach().requires_grad_(True)
    cell, inputs = graph.cell.detach(), [positions]
    strained = positions
    if stress:
        strain = torch.zeros_like(cell).requires_grad_(True)  # [B, 3, 3]
        sym = 0.5 * (strain + strain.transpose(1, 2))
        strained = positions + torch.einsum("ni,nij->nj", positions, sym[graph.batch])
        cell = cell + torch.bmm(cell, sym)
        inputs.append(strain)
    out = model(replace(graph, positions=strained, cell=cell), energy_only=True,
                **model_kwargs)
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
    out[keys.ENERGY_SPREAD] = spread_of(heads, 1)  # [B]
    if stress:
        volume = torch.linalg.det(graph.cell).abs()  # [B]
        volume = torch.where(volume > 0, volume, torch.ones_like(volume))
        out[keys.STRESS] = torch.stack([g[1] for g in grads]).mean(0) / volume[:, None, None]
    return out


@torch.no_grad()
def init_heads_from(model, state: dict, generator: torch.Generator | None = None,
                    relative: float = 0.05) -> None:
    """Load ``state`` (a state dict of the same architecture) into ``model``; where the
    checkpoint has fewer energy heads than ``model`` (e.g. 1), every head starts as the
    mean of the stored ones plus a zero-mean perturbation of ``relative`` times the
    weights' RMS, so the ensemble mean starts exactly at the stored model's energy."""
    state = dict(state)
    key = "energy_readout.weight"
    stored = state.pop(key)  # [K0, c]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) - {key} or unexpected:
        raise ValueError(f"the initial weights do not fit the model: missing {missing}, "
                         f"unexpected {unexpected}")
    w = model.energy_readout.weight  # [K, c]
    if stored.shape == w.shape:
        w.copy_(stored)
        return
    if stored.shape[1] != w.shape[1]:
        raise ValueError(f"energy readout of the initial weights has {stored.shape[1]} "
                         f"channels, the model {w.shape[1]}")
    mean = stored.mean(0, keepdim=True).to(w)
    noise = torch.randn(w.shape, generator=generator, dtype=w.dtype)
    noise = noise - noise.mean(0, keepdim=True)
    w.copy_(mean + relative * mean.square().mean().sqrt() * noise)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a), np.asarray(b)).statistic)
