"""Give a trained potential a dipole head without changing its energies: the readouts are
linear, so their best fit is a least-squares solution.

A model with a dipole head (:class:`tfn_md.TFNConfig` ``dipole``) predicts, per structure
b of N_b atoms with total charge Q_b and centroid r̄_b (the model docstring states it):

    q_i  = (s_i - s̄_b) · w_q + (e_i - ē_b) · chi + Q_b / N_b                  (e)
    mu_b = sum_i (r_i - r̄_b) [(s_i · w_q) + (e_i · chi)] + sum_i V_i w_p + Q_b r̄_b   (e*A)

with s_i [c] the last layer's l = 0 features measured from the isolated atom's, e_i the
one-hot species [S], V_i [3, c] the l = 1 features entering the last layer (Cartesian) and
w_q [c], chi [S], w_p [c] the weights the dipole head adds (the charge readout, its
per-species bias and the atomic-dipole readout). Nothing the energy depends on changes, so
energies, forces, stress and their uncertainty stay exactly what they were.

:func:`fit_dipole_head` stacks, for the structures that have them, the dipole rows (3 per
structure) and, weighted by sqrt(``charges_weight``), the charge rows (1 per atom), and
solves for (w_q, chi, w_p) by least squares with a small ridge (``ridge`` times the mean
diagonal of the normal matrix), in float64.
"""

import numpy as np
import torch

from .. import keys
from ..data.loader import collate_batch
from ..model import L1_TO_XYZ, TFN

__all__ = ["fit_dipole_head", "with_dipole_head"]


def with_dipole_head(model: TFN) -> TFN:
    """A copy of ``model`` with ``dipole=True`` and every weight of ``model`` (the new
    charge readout and bias start at zero)."""
    config = {k: v for k, v in vars(model.config).items() if k != "species"}
    config["dipole"] = True
    new = TFN(model.config.species, **config).to(model.e0.dtype)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if set(missing) - {"charge_readout.weight", "charge_bias", "dipole_readout.weight"} \
            or unexpected:
        raise ValueError(f"weights do not match: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        new.charge_readout.weight.zero_()
        new.charge_bias.zero_()
        new.dipole_readout.weight.zero_()
    return new


def _rows(model: TFN, dataset, charges_weight: float, batch_size: int):
    """Least-squares rows (A, y) of every structure of ``dataset`` with a dipole label."""
    c, n_species = model.config.channels, len(model.species)
    blocks_a, blocks_y = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                         collate_fn=collate_batch)
    with torch.no_grad():
        isolated = model.isolated_features(scalars_only=True)
    for graph, targets in loader:
        if keys.DIPOLE not in targets:  # a batch without dipole labels
            continue
        graph = graph.to(dtype=torch.float64)
        inputs = []
        with torch.no_grad():
            x, species, _ = model.features(graph, scalars_only=True, inputs=inputs)
        s = (x[..., 0] - isolated[species][..., 0]).numpy()  # [n, c]
        v = inputs[0][..., 1:4][..., L1_TO_XYZ].numpy()  # [n, c, 3] Cartesian
        onehot = np.eye(n_species)[species.numpy()]  # [n, S]
        pos, batch = graph.positions.numpy(), graph.batch.numpy()
        charge = (np.zeros(graph.n_graphs) if graph.charge is None
                  else graph.charge.numpy())
        mask = targets[f"{keys.DIPOLE}_mask"].numpy()
        for b in np.flatnonzero(mask):
            atoms = batch == b
            n = atoms.sum()
            centroid = pos[atoms].mean(0)
            d = pos[atoms] - centroid  # [m, 3]
            a = np.concatenate([d.T @ s[atoms], d.T @ onehot[atoms],
                                v[atoms].sum(0).T], axis=1)  # [3, c + S + c]
            blocks_a.append(a)
            blocks_y.append(targets[keys.DIPOLE][b].numpy() - charge[b] * centroid)
            if charges_weight > 0 and keys.CHARGES in targets:
                q_mask = targets[f"{keys.CHARGES}_mask"].numpy()[atoms]
                if q_mask.all():
                    w = np.sqrt(charges_weight)
                    rows = np.concatenate([s[atoms] - s[atoms].mean(0),
                                           onehot[atoms] - onehot[atoms].mean(0),
                                           np.zeros((n, c))], axis=1)
                    blocks_a.append(w * rows)
                    blocks_y.append(w * (targets[keys.CHARGES].numpy()[atoms] - charge[b] / n))
    if not blocks_a:
        raise ValueError("no structure with a dipole label to fit the dipole head to")
    return np.concatenate(blocks_a), np.concatenate(blocks_y)


def fit_dipole_head(model: TFN, datasets, charges_weight: float = 1.0, ridge: float = 1e-8,
                    batch_size: int = 16) -> tuple[TFN, dict]:
    """(a copy of ``model`` with a fitted dipole head, fit statistics). ``datasets``:
    :class:`tfn_md.data.loader.GraphDataset` objects loading ``dipole`` (vector key) and
    charges. ``charges_weight``: weight of a charge residual (e) against a dipole
    component's (e*A). Statistics: structures and atoms used, the fit's dipole RMSE per
    component (e*A) and charge RMSE (e)."""
    exact = with_dipole_head(model).double()
    exact.untabulate()
    exact.eval()
    parts = [_rows(exact, ds, charges_weight, batch_size) for ds in datasets]
    a = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    normal = a.T @ a
    normal += ridge * np.trace(normal) / len(normal) * np.eye(len(normal))
    theta = np.linalg.solve(normal, a.T @ y)
    c, n_species = exact.config.channels, len(exact.species)
    fitted = with_dipole_head(model)
    with torch.no_grad():
        dtype = fitted.e0.dtype
        fitted.charge_readout.weight.copy_(torch.as_tensor(theta[:c][None], dtype=dtype))
        fitted.charge_bias.copy_(torch.as_tensor(theta[c:c + n_species], dtype=dtype))
        fitted.dipole_readout.weight.copy_(torch.as_tensor(theta[c + n_species:][None],
                                                           dtype=dtype))
    residual = a @ theta - y
    return fitted, {"rows": len(y), "fit_rmse": float(np.sqrt(np.mean(residual ** 2)))}
