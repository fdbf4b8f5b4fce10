"""Training the heads of a shallow ensemble (the uncertainty of
:mod:`tfn_md.inference.uncertainty`).

Training (Kellner & Ceriotti, "Uncertainty quantification by direct propagation of
shallow ensembles", 2024, with the mean kept out of it): the mean is trained by the
usual squared errors, the spread by the Gaussian negative log-likelihood of the energy
per atom, e = E/N,

    NLL_b = 1/2 [ (e_b - e*_b)^2 / s_b^2 + log s_b^2 ],    s_b^2 = var_k(e_k,b) + s0^2

with the mean e_b and the features z detached (:func:`energy_nll`): the NLL moves only
the heads' deviations from their mean (a shift of all w_k together leaves s_b
unchanged, so the mean head w̄ gets no gradient from it), and cannot trade accuracy of
the mean for a larger spread. s0 = 0.1 meV/atom keeps s_b^2 > 0.

Calibrating the force spread (:func:`calibrate_heads`, after training; ``tfn-md learn``
does it after every training): with the features frozen, the heads' force deviations are
linear in the deviations w_k - w̄ (D_k,i = -scale (w_k - w̄) · J_i, J_i = d(sum_j z_j)/dx_i),
so the deviations are fitted to the force residuals of training frames by the Gaussian
NLL of the force components, the mean head kept fixed (no prediction changes). Measured
on ethanol (independent GFN2-xTB trajectories, 350 and 700 K): the Spearman correlation of
the per-frame force spread with the per-frame force error went from 0.54 (energy NLL only)
to 0.77 (see potentials/ethanol-gfn2.md for the shipped model's numbers).

Calibrating the energy uncertainty (:func:`calibrate_llpr`, after training; the
prediction rigidity of :mod:`tfn_md.inference.uncertainty`): with f_b the pooled readout
inputs of structure b [c] and N_b its atoms, A = sum_b f_b f_b^T / N_b^2 over the
training structures (the loss fits energies per atom), and on calibration structures
(not trained on) s_b^2 = f_b^T (A + varsigma^2 I)^-1 f_b, the energy errors e_b fix
alpha^2 = mean_b e_b^2 / s_b^2 and varsigma^2 minimises the Gaussian NLL
1/2 mean_b [e_b^2 / (alpha^2 s_b^2) + log(alpha^2 s_b^2)] (a search over 13 decades of
the largest eigenvalue of A); then C = alpha^2 (A + varsigma^2 I)^-1 (alpha absorbs the
model's scale).

Per-frame statistics (:func:`frame_spreads_and_errors`): the force spread of a frame is
sqrt(mean_i sigma_Fi^2), its force error sqrt(mean_i |F_i - F*_i|^2) (both eV/A).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .. import keys
from ..graph import Graph
from ..inference.uncertainty import ensemble_response

__all__ = ["S0", "calibrate_heads", "calibrate_llpr", "calibration_summary", "energy_nll",
           "feature_jacobians", "frame_spreads_and_errors", "init_heads_from",
           "readout_statistics", "spearman"]

S0 = 1e-4  # eV/atom: floor of the predicted energy spread in the NLL


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
    if set(missing) - {key, "wall_radius"} or unexpected:  # the trainer sets the wall
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


def frame_spreads_and_errors(model, dataset, batch_size: int = 16
                             ) -> dict[str, np.ndarray]:
    """Per frame of ``dataset`` (a :class:`tfn_md.data.loader.GraphDataset` with force
    labels), eV/A: ``spread_rms`` = sqrt(mean_i sigma_Fi^2) and ``spread_max`` = max_i
    sigma_Fi (predicted), ``error_rms`` = sqrt(mean_i |F_i - F*_i|^2) and ``error_max`` =
    max_i |F_i - F*_i| (true), ``energy_spread`` (the energy uncertainty, eV) and
    ``energy_error`` |E - E*| (eV; NaN where a frame has no energy label)."""
    from ..data.loader import collate_batch

    dtype = model.e0.dtype
    rows: dict[str, list] = {k: [] for k in ("spread_rms", "spread_max", "error_rms",
                                             "error_max", "energy_spread", "energy_error")}
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                         collate_fn=collate_batch)
    for graph, targets in loader:
        graph, targets = graph.to("cpu", dtype), targets.to("cpu", dtype)
        out = ensemble_response(model, graph)
        spread = out[keys.FORCES_SPREAD].detach().double()  # [n]
        error = (out[keys.FORCES].detach() - targets[keys.FORCES]).double().norm(dim=-1)
        e_error = torch.where(targets[f"{keys.ENERGY}_mask"],
                              (out[keys.ENERGY].detach() - targets[keys.ENERGY]).abs(), torch.nan)
        for b in range(graph.n_graphs):
            atoms = graph.batch == b
            rows["spread_rms"].append(float(spread[atoms].square().mean().sqrt()))
            rows["spread_max"].append(float(spread[atoms].max()))
            rows["error_rms"].append(float(error[atoms].square().mean().sqrt()))
            rows["error_max"].append(float(error[atoms].max()))
            rows["energy_spread"].append(float(out[keys.ENERGY_SPREAD][b].detach()))
            rows["energy_error"].append(float(e_error[b]))
    return {k: np.array(v) for k, v in rows.items()}


def calibration_summary(frames: dict[str, np.ndarray], threshold: float | None = None,
                        kind: str = "rms", energy_threshold: float | None = None) -> dict:
    """Spearman correlation of the per-frame force spread with the per-frame force error
    (``kind`` "rms" or "max", see :func:`frame_spreads_and_errors`); with ``threshold``
    (eV/A, on the same spread), how many frames it flags and the mean error of the
    flagged frames over that of the rest. The same for the energy uncertainty against
    the absolute energy error under ``"energy"`` (``energy_threshold`` in eV)."""
    result = {"kind": kind, **_ranking(frames[f"spread_{kind}"], frames[f"error_{kind}"],
                                       threshold)}
    labelled = np.isfinite(frames["energy_error"])
    result["energy"] = _ranking(frames["energy_spread"][labelled],
                                frames["energy_error"][labelled], energy_threshold)
    return result


def _ranking(spread: np.ndarray, error: np.ndarray, threshold: float | None) -> dict:
    result = {"n_frames": len(spread),
              "spearman": spearman(spread, error) if len(spread) > 2 else float("nan"),
              "mean_spread": float(spread.mean()) if len(spread) else float("nan"),
              "mean_error": float(error.mean()) if len(spread) else float("nan")}
    if threshold is not None:
        flagged = spread > threshold
        result.update(threshold=float(threshold), flagged=int(flagged.sum()))
        if flagged.any() and (~flagged).any():
            result["flagged_mean_error"] = float(error[flagged].mean())
            result["rest_mean_error"] = float(error[~flagged].mean())
            result["error_ratio"] = result["flagged_mean_error"] / result["rest_mean_error"]
    return result


def feature_jacobians(model, dataset, batch_size: int = 16, max_frames: int | None = None
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """For the frames of ``dataset`` (a GraphDataset with force labels): the Jacobians
    J_c,i = d(sum_j z_jc)/dx_i of the pooled readout inputs [c, A, 3] (c backward passes
    per batch), the residuals of the mean forces F_i - F*_i [A, 3] and each atom's frame
    [A], over the A atoms of the frames used."""
    from ..data.loader import collate_batch

    dtype = model.e0.dtype
    indices = list(range(len(dataset)))[:max_frames]
    subset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size,
                                         collate_fn=collate_batch)
    jacobians, residuals, frames, offset = [], [], [], 0
    from dataclasses import replace

    for graph, targets in loader:
        graph, targets = graph.to("cpu", dtype), targets.to("cpu", dtype)
        positions = graph.positions.detach().requires_grad_(True)
        out = model(replace(graph, positions=positions), energy_only=True)
        z = out[keys.READOUT_INPUTS]  # [n, c]
        pooled = z.sum(0)  # [c] (the frames' atoms are disjoint: one sum serves all)
        c = pooled.shape[0]
        jac = torch.stack([torch.autograd.grad(pooled[q], positions, retain_graph=q < c - 1)[0]
                           for q in range(c)])  # [c, n, 3]
        mean_forces = -model.scale * torch.einsum("c,cna->na", model.energy_readout.weight
                                                  .mean(0), jac)
        jacobians.append(jac.detach())
        residuals.append((mean_forces - targets[keys.FORCES]).detach())
        frames.append(graph.batch + offset)
        offset += graph.n_graphs
    return torch.cat(jacobians, 1), torch.cat(residuals), torch.cat(frames)


def calibrate_heads(model, dataset, max_frames: int = 800, steps: int = 600, lr: float = 0.02,
                    floor: float = 1e-3, seed: int = 0) -> dict:
    """Fit the heads' deviations from their mean to the force residuals of ``dataset``
    (post-hoc, everything else frozen): with D_k,i = -scale (w_k - w̄) · J_i the heads'
    force deviations (:func:`feature_jacobians`), per-component variance
    v_i = (1/3K) sum_k |D_k,i|^2 + floor^2, minimise the Gaussian NLL

        (1/A) sum_i 1/2 [ |F_i - F*_i|^2 / v_i + 3 log v_i ]

    over the deviations (kept zero-mean: w̄, hence every prediction of the mean, is
    unchanged): first their common scale (a search over 12 decades), then ``steps`` Adam
    steps on all of them. Changes ``model.energy_readout.weight`` in place; returns the NLL before
    and after and the frames used."""
    w = model.energy_readout.weight
    jac, res, _ = feature_jacobians(model, dataset, max_frames=max_frames)
    jac, res = jac.double(), res.double()  # [c, A, 3], [A, 3]
    scale = float(model.scale)
    mean = w.detach().double().mean(0, keepdim=True)  # [1, c]
    delta = (w.detach().double() - mean).clone().requires_grad_(True)  # [K, c]
    sq = res.square().sum(-1)  # [A]

    def nll(d):
        d = d - d.mean(0, keepdim=True)
        dev = scale * torch.einsum("kc,cna->kna", d, jac)  # [K, A, 3]
        v = dev.square().sum(-1).mean(0) / 3 + floor**2  # [A]
        return (0.5 * (sq / v + 3 * v.log())).mean()

    with torch.no_grad():
        before = float(nll(delta))
        # first the best common scale of all deviations (a 1-D search over 10^-6..10^6),
        # so that the steps below refine shapes, whatever the initial size
        factors = torch.logspace(-6, 6, 241, dtype=delta.dtype)
        best = min(factors.tolist(), key=lambda f: float(nll(f * delta)))
        delta.mul_(best)
    opt = torch.optim.Adam([delta], lr=lr * float(delta.detach().abs().mean()))
    for _ in range(steps):
        opt.zero_grad()
        loss = nll(delta)
        loss.backward()
        opt.step()
    with torch.no_grad():
        d = delta - delta.mean(0, keepdim=True)
        after = float(nll(d))
        w.copy_((mean + d).to(w))
    return {"nll_before": before, "nll_after": after, "frames": min(len(dataset), max_frames),
            "atoms": int(res.shape[0])}


@torch.no_grad()
def readout_statistics(model, dataset, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per structure of ``dataset`` (a GraphDataset): the pooled readout inputs ``pooled``
    f_b [B, c], ``n_atoms`` [B] and, where labelled (else NaN), the energy error
    ``energy_error`` E - E* [B] (eV); float64."""
    from ..data.loader import collate_batch

    added = not model.config.llpr  # the readout inputs come with the llpr output
    if added:
        model.set_readout_covariance(torch.zeros(model.config.channels, model.config.channels))
    dtype = model.e0.dtype
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                         collate_fn=collate_batch)
    rows: dict[str, list] = {"pooled": [], "n_atoms": [], "energy_error": []}
    try:
        for graph, targets in loader:
            graph, targets = graph.to("cpu", dtype), targets.to("cpu", dtype)
            out = model(graph, energy_only=True)
            z = out[keys.READOUT_INPUTS].double()
            rows["pooled"].append(z.new_zeros(graph.n_graphs, z.shape[1]).index_add_(
                0, graph.batch, z))
            rows["n_atoms"].append(torch.bincount(graph.batch, minlength=graph.n_graphs))
            error = (out[keys.ENERGY] - targets[keys.ENERGY]).double()
            rows["energy_error"].append(torch.where(targets[f"{keys.ENERGY}_mask"], error,
                                                    torch.nan))
    finally:
        if added:  # the model as it was
            model.config.llpr = False
            del model.readout_covariance
    return {k: torch.cat(v).numpy() for k, v in rows.items()}


def calibrate_llpr(model, train_dataset, calibration_dataset) -> dict:
    """Give ``model`` its energy uncertainty (module docstring): the rigidity A from the
    structures of ``train_dataset``, alpha and varsigma from the energy errors of those of
    ``calibration_dataset`` (structures not trained on). Sets
    ``model.readout_covariance``; returns alpha^2, varsigma^2, the NLL, the Spearman
    correlation of sigma_E with |error| and the 99th percentile of sigma_E (``sigma_p99``)
    on the calibration structures with energies."""
    calib = readout_statistics(model, calibration_dataset)
    labelled = np.isfinite(calib["energy_error"])
    if labelled.sum() < 2:
        raise ValueError("calibrating the energy uncertainty needs at least 2 calibration "
                         f"structures with energies; {calibration_dataset} has "
                         f"{int(labelled.sum())}")
    train = readout_statistics(model, train_dataset)
    rows = train["pooled"] / train["n_atoms"][:, None]  # [B, c]
    lam, u = np.linalg.eigh(rows.T @ rows)  # A = U diag(lam) U^T
    lam = np.clip(lam, 0.0, None)
    e2 = calib["energy_error"][labelled] ** 2
    proj2 = (calib["pooled"][labelled] @ u) ** 2  # [B', c]
    best = None
    for varsigma2 in lam.max() * np.logspace(-12, 1, 131):
        s2 = proj2 @ (1.0 / (lam + varsigma2))  # [B']
        alpha2 = float(np.mean(e2 / s2))
        nll = float(np.mean(0.5 * (e2 / (alpha2 * s2) + np.log(alpha2 * s2))))
        if best is None or nll < best[0]:
            best = (nll, float(varsigma2), alpha2, s2)
    nll, varsigma2, alpha2, s2 = best
    covariance = alpha2 * (u / (lam + varsigma2)) @ u.T
    model.set_readout_covariance(torch.as_tensor(covariance))
    sigma = np.sqrt(alpha2 * s2)
    error = np.sqrt(e2)
    return {"alpha2": alpha2, "varsigma2": varsigma2, "nll": nll,
            "train_structures": len(rows), "calibration_structures": int(labelled.sum()),
            "spearman": spearman(sigma, error), "mean_sigma": float(sigma.mean()),
            "sigma_p99": float(np.quantile(sigma, 0.99)), "mean_abs_error": float(error.mean())}
