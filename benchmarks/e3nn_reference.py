"""The same TFN mathematics written directly on e3nn, as a speed and correctness reference.

:class:`E3nnTFN` wraps a trained or random :class:`tfn_md.TFN` and replaces only its
convolutions by e3nn: spherical harmonics from ``e3nn.o3.spherical_harmonics`` (of the
cyclically permuted vector, which is tfn_md's basis), one ``e3nn.o3.TensorProduct`` per
layer with one "uvu" instruction per path and external per-edge weights (the same radial
MLPs), and an index_add scatter. Embedding, self-interaction, nonlinearity and readouts
are the model's own, so the energies agree to float tolerance; the weights map as
w_e3nn = sqrt(2 lO + 1) * s_p * R_p with s_p = ±1 the relative sign of the two
Clebsch-Gordan conventions of path p. Every irrep is labelled even ("le"): tfn_md is
SO(3)-equivariant with all paths, which e3nn's O(3) selection rules would otherwise prune.
"""

import math

import torch
from e3nn import o3
from torch import nn

from tfn_md import keys
from tfn_md.model import L1_TO_XYZ, TFN
from tfn_md.nn import polynomial_envelope
from tfn_md.so3 import clebsch_gordan, sh_slice

PERMUTE = [1, 2, 0]  # tfn_md's Y(x, y, z) = e3nn's Y(y, z, x)


class E3nnConvolution(nn.Module):
    """One TFN convolution on e3nn; ``l_out`` < the layer's keeps only the paths with
    lO <= l_out (and their radial functions), as tfn_md does for energy-only calls."""

    def __init__(self, conv, l_out=None):
        super().__init__()
        self.conv = conv  # our radial MLP, paths and normalisation
        self.l_out = conv.l_out if l_out is None else l_out
        kept = [q for q, path in enumerate(conv.paths) if path[2] <= self.l_out]
        self.paths = [conv.paths[q] for q in kept]
        c = conv.channels
        self.register_buffer("rows", torch.tensor([q * c + k for q in kept for k in range(c)]))
        irreps_in = o3.Irreps([(c, (l, 1)) for l in range(conv.l_in + 1)])
        irreps_sh = o3.Irreps([(1, (l, 1)) for l in range(conv.l_filter + 1)])
        irreps_out = o3.Irreps([(c, (lo, 1)) for _, _, lo in self.paths])
        instructions, signs = [], []
        for p, (li, lf, lo) in enumerate(self.paths):
            ours = clebsch_gordan(lf, li, lo).permute(1, 0, 2)
            sign = float(torch.sign((ours * o3.wigner_3j(li, lf, lo, dtype=torch.float64)).sum()))
            signs.append(sign)
            # e3nn scales a path by sqrt(path_weight); the sign goes into the weights
            instructions.append((li, lf, p, "uvu", True, float(2 * lo + 1)))
        self.register_buffer("signs", torch.tensor(signs))
        self.tp = o3.TensorProduct(irreps_in, irreps_sh, irreps_out, instructions,
                                   irrep_normalization="none", path_normalization="none",
                                   internal_weights=False, shared_weights=False)

    def forward(self, x, sh, basis, envelope, edge_index):
        conv = self.conv
        n, c = x.shape[0], conv.channels
        centre, neighbour = edge_index
        r = conv.radial
        w = nn.functional.linear(r.act(r.hidden(basis)), r.out.weight[self.rows],
                                 r.out.bias[self.rows]).view(basis.shape[0], -1, c)
        w = w * self.signs[:, None]  # [E, P, c]
        if envelope is not None:
            w = w * envelope[:, None, None]
        x_in = torch.cat([x[:, :, sh_slice(l)].reshape(n, -1) for l in range(conv.l_in + 1)], 1)
        msg = self.tp(x_in[neighbour], sh, w.reshape(w.shape[0], -1))  # [E, sum c(2lO+1)]
        out = msg.new_zeros(n, msg.shape[1]).index_add_(0, centre, msg)
        out = out / math.sqrt(conv.avg_num_neighbors)
        per_path, col = [], 0
        for _, _, lo in self.paths:
            per_path.append(out[:, col : col + c * (2 * lo + 1)].reshape(n, c, 2 * lo + 1))
            col += c * (2 * lo + 1)
        blocks = []
        for lo in range(self.l_out + 1):
            paths = [t for t, (_, _, l) in zip(per_path, self.paths) if l == lo]
            blocks.append(torch.stack(paths, 2).reshape(n, c * len(paths), 2 * lo + 1))
        return blocks


class E3nnTFN(nn.Module):
    """``model`` with its convolutions computed by e3nn (see the module docstring)."""

    def __init__(self, model: TFN):
        super().__init__()
        self.model = model
        self.convs = nn.ModuleList([E3nnConvolution(c) for c in model.convolutions])
        self.last_scalars = E3nnConvolution(model.convolutions[-1], 0)  # energy-only calls
        self.to(model.e0.dtype)

    def forward(self, graph, energy_only=False):
        m, cfg = self.model, self.model.config
        x, species = m.embed(graph)
        vec = m.edge_vectors(graph)
        length = torch.linalg.vector_norm(vec, dim=-1)
        sh = o3.spherical_harmonics(list(range(cfg.l_max + 1)), vec[:, PERMUTE], normalize=True,
                                    normalization="component")
        basis = m.basis(length)
        env = polynomial_envelope(length, cfg.cutoff, cfg.envelope_p) if cfg.basis == "bessel" \
            else None
        convs = list(self.convs[:-1]) + [self.last_scalars if energy_only else self.convs[-1]]
        for conv, si, nl in zip(convs, m.self_interactions, m.nonlinearities):
            h = nl(si(conv(x, sh, basis, env, graph.edge_index)))
            if cfg.residual:
                d = min(x.shape[-1], h.shape[-1])
                h = torch.cat([h[..., :d] + x[..., :d], h[..., d:]], dim=-1)
            x = h
        iso = m.isolated_features(energy_only)[species]
        e_atom = m.energy_readout(x[..., 0] - iso[..., 0]).mean(-1)  # the heads' mean
        energies = m.scale * e_atom + m.shift + m.e0[species]
        energy = energies.new_zeros(graph.n_graphs).index_add_(0, graph.batch, energies)
        out = {keys.ENERGIES: energies, keys.ENERGY: energy}
        if m.vector_readout is not None and not energy_only:
            out[keys.VECTORS] = m.vector_readout(x[..., 1:4].transpose(1, 2)).squeeze(-1)[
                :, L1_TO_XYZ]
        return out
