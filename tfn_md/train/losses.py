"""The one table of loss terms and metrics: training, validation and ``tfn-md eval`` all
read it, so a label that is trained is also validated and evaluated.

A term compares a model output with a label over the structures (or atoms) whose mask
says they have it. Its residuals r, one row of ``components`` numbers per labelled item:

    energy   (E_b - E*_b) / N_b          per structure, 1 component  (metric energy_per_atom)
    forces   F_i - F*_i                  per atom, 3 components
    stress   S_b - S*_b                  per structure, 9 components (3 x 3)
    <vector> v - v*                      per atom [N, 3], or per structure [B, 3] with v the
                                         sum of the model's per-atom vectors; ``dipole`` of a
                                         model with a dipole head: its dipole mu [B, 3]
    charges  q_i - q*_i                  per atom, 1 component (model.dipole)

The loss of a batch is  sum_t w_t sum |r_t|^2 / (components_t * count_t)  (counts over all
processes under data parallelism); the validation loss is the same sum with the
epoch's RMSE of each term (per component), so sum_t w_t RMSE_t^2.
"""

from dataclasses import dataclass

import torch

from .. import keys

__all__ = ["Term", "differences", "loss_from_metrics", "residuals", "terms"]


@dataclass(frozen=True)
class Term:
    """A loss term: label ``name``, its weight, and the name of its metrics."""

    name: str
    weight: float
    components: int
    metric: str


def terms(weights) -> list[Term]:
    """The terms of a ``LossSection`` (energy, forces, stress, then vectors), weight > 0."""
    table = [
        Term(keys.ENERGY, weights.energy, 1, "energy_per_atom"),
        Term(keys.FORCES, weights.forces, 3, "forces"),
        Term(keys.STRESS, weights.stress, 9, "stress"),
    ]
    table += [Term(name, w, 3, name) for name, w in weights.vectors.items()]
    table.append(Term(keys.CHARGES, getattr(weights, "charges", 0.0), 1, "charges"))
    return [t for t in table if t.weight > 0]


def residuals(term: Term, out: dict, targets: dict, graph) -> torch.Tensor:
    """[k, components] residuals of the k labelled items of ``term`` in this batch."""
    mask = targets[f"{term.name}_mask"]
    return differences(term, out, targets, graph)[mask].reshape(-1, term.components)


def differences(term: Term, out: dict, targets: dict, graph) -> torch.Tensor:
    """Residuals of every item of ``term`` in this batch, labelled or not (the mask
    ``targets[name + "_mask"]`` says which count), shaped [items, ...]."""
    label = targets[term.name]
    if term.name == keys.ENERGY:
        n_atoms = label.new_zeros(graph.n_graphs).index_add_(
            0, graph.batch, label.new_ones(graph.batch.shape[0]))
        diff = (out[keys.ENERGY] - label) / n_atoms
    elif term.name in (keys.FORCES, keys.STRESS):
        diff = out[term.name] - label
    elif term.name == keys.CHARGES:
        diff = out[keys.CHARGES] - label
    elif term.name == keys.DIPOLE and keys.DIPOLE in out:  # the dipole head's mu [B, 3]
        diff = out[keys.DIPOLE] - label
    else:  # a vector label: per atom, or per structure (sum over its atoms)
        pred = out[keys.VECTORS]
        if term.name not in targets.per_atom:
            pred = pred.new_zeros(graph.n_graphs, 3).index_add_(0, graph.batch, pred)
        diff = pred - label
    return diff


def needs(weights, targets: dict) -> dict[str, bool]:
    """Which responses a batch needs: forces, stress, vectors (the loss terms it has)."""
    present = {t.name for t in terms(weights) if t.name in targets}
    return {
        "forces": keys.FORCES in present,
        "stress": keys.STRESS in present,
        "vectors": bool(present - {keys.ENERGY, keys.FORCES, keys.STRESS}),
    }


def loss_from_metrics(metrics: dict, weights) -> float:
    """sum_t w_t RMSE_t^2: the validation loss, on the scale of the training loss."""
    return sum(t.weight * metrics.get(f"{t.metric}_rmse", 0.0) ** 2 for t in terms(weights))
