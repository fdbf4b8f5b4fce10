"""Forces and stress by autograd, in one pass (design note 6).

    F_i   = -dE/dx_i                                   [n_atoms, 3]  eV/A
    sigma = (1/V) dE/d(eps),  x -> x (1 + eps), cell -> cell (1 + eps),
            eps symmetric, at eps = 0                  [n_graphs, 3, 3]  eV/A^3

This is ASE's sign convention (``atoms.get_stress()``, positive under tension).
``training=True`` keeps the graph (create_graph) so force losses can be trained.
"""

from dataclasses import replace

import torch
from torch import Tensor, nn

from .. import keys
from ..graph import Graph

__all__ = ["compute_response", "full_3x3_to_voigt"]


def full_3x3_to_voigt(stress: Tensor) -> Tensor:
    """[..., 3, 3] -> [..., 6] in ASE order (xx, yy, zz, yz, xz, xy)."""
    idx0 = [0, 1, 2, 1, 0, 0]
    idx1 = [0, 1, 2, 2, 2, 1]
    return stress[..., idx0, idx1]


def compute_response(
    model: nn.Module,
    graph: Graph,
    forces: bool = True,
    stress: bool = False,
    training: bool = False,
    energy_only: bool = False,
    **model_kwargs,
) -> dict[str, Tensor]:
    """Run ``model`` on ``graph`` and add ``forces`` and (3x3) ``stress`` from dE/dx, dE/deps.
    ``energy_only`` asks the model for energies alone (no vectors or tensors: cheaper);
    ``model_kwargs`` go to the model (e.g. precomputed ``isolated`` features)."""
    strained, inputs = strained_graph(graph, forces or stress, stress)
    if energy_only:
        model_kwargs["energy_only"] = True
    out = model(strained, **model_kwargs)
    if not (forces or stress):
        return out
    grads = torch.autograd.grad(
        out[keys.ENERGY].sum(), inputs, create_graph=training, allow_unused=True
    )
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
    if forces:
        out[keys.FORCES] = -grads[0]
    if stress:
        out[keys.STRESS] = stress_from_strain_gradient(grads[1], graph)
    return out


def strained_graph(graph: Graph, positions_grad: bool, stress: bool) -> tuple[Graph, list]:
    """(the graph with x -> x (1 + eps), cell -> cell (1 + eps) at eps = 0 where ``stress``,
    the tensors to differentiate by: [positions] (+ [strain eps [n_graphs, 3, 3]]))."""
    positions = graph.positions.detach().requires_grad_(positions_grad)
    cell = graph.cell.detach()
    inputs = [positions]
    if stress:
        strain = torch.zeros_like(cell).requires_grad_(True)  # [n_graphs, 3, 3]
        sym = 0.5 * (strain + strain.transpose(1, 2))
        positions = positions + torch.einsum("ni,nij->nj", positions, sym[graph.batch])
        cell = cell + torch.bmm(cell, sym)
        inputs.append(strain)
    return replace(graph, positions=positions, cell=cell), inputs


def stress_from_strain_gradient(grad: Tensor, graph: Graph) -> Tensor:
    """sigma = (1/V) dE/d(eps) [n_graphs, 3, 3]."""
    volume = torch.linalg.det(graph.cell).abs()  # [n_graphs]
    # no volume without a cell: leave dE/deps unscaled there (never NaN; callers mask it)
    volume = torch.where(volume > 0, volume, torch.ones_like(volume))
    return grad / volume[:, None, None]
