"""Re-fitting a trained model's energy zero: the per-element constants E0.

Forces do not see a constant, and the energy term of the loss is weak beside the force
term, so a short retraining on a few unusual frames moves the network's energy of every
structure by nearly the same amount and nothing pulls it back (the ethylamine trial of
``tfn-md learn``: 0.8 meV/atom per retraining with 32 channels, up to 2.8 with 64, driven
by frames selected far above the rest, one 4.8 eV above, that the model could not fit).
After a training, E0 [n_species] (eV) is corrected by the least-squares solution dE0 of

    sum_s n_bs dE0_s = E*_b - E_b        over the structures b given,

n_bs the atoms of element s in b (minimum norm where the counts are collinear, as for
frames of one molecule): the energy MSE over those structures is then minimal with
respect to E0, and forces, stress, the heads' spread and every weight stay as they were.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import keys

__all__ = ["refit_energy_zero"]


@torch.no_grad()
def refit_energy_zero(model, dataset, batch_size: int = 32) -> dict:
    """Add dE0 (module docstring) to ``model.e0`` from the labelled structures of
    ``dataset`` (a GraphDataset). Returns the structures used, dE0 (eV per element) and
    the mean energy offset <(E - E*)/N> before and after (meV/atom)."""
    from ..data.loader import collate_batch

    model.eval()
    dtype = model.e0.dtype
    n_species = model.e0.shape[0]
    counts, errors = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                         collate_fn=collate_batch)
    for graph, targets in loader:
        graph, targets = graph.to(model.e0.device, dtype), targets.to(model.e0.device, dtype)
        if keys.ENERGY not in targets:
            continue
        mask = targets[f"{keys.ENERGY}_mask"]
        error = model(graph, energy_only=True)[keys.ENERGY] - targets[keys.ENERGY]  # [B]
        species = model.species_index(graph.numbers)  # [n]
        count = torch.zeros(graph.n_graphs, n_species, dtype=torch.float64,
                            device=error.device)
        count.index_put_((graph.batch, species), torch.ones_like(species, dtype=count.dtype),
                         accumulate=True)  # [B, n_species]
        counts.append(count[mask].cpu())
        errors.append(error[mask].double().cpu())
    if not counts or not sum(len(e) for e in errors):
        raise ValueError("re-fitting the energy zero needs structures with energies")
    n = torch.cat(counts).numpy()  # [B, n_species]
    e = torch.cat(errors).numpy()  # [B] eV, model - reference
    delta = np.linalg.lstsq(n, -e, rcond=None)[0]  # [n_species] eV
    model.e0.add_(torch.as_tensor(delta, dtype=dtype, device=model.e0.device))
    per_atom = n.sum(1)
    return {"structures": int(len(e)), "delta_e0_eV": delta.tolist(),
            "offset_before_meV_per_atom": 1000 * float((e / per_atom).mean()),
            "offset_after_meV_per_atom": 1000 * float(((e + n @ delta) / per_atom).mean())}
