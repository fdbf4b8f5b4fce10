"""The TFN point convolution (Thomas et al. 2018, eq. for L^(lO)):

    L^{lO}_{a,c,mO} = sum_{p = (lI, lF, lO)} k_p sum_{b in N(a)} R^p_c(r_ab)
                      sum_{mF, mI} C^{lF lI lO}_{mF mI mO} Y^{lF}_{mF}(r_ab_hat) V^{lI}_{b,c,mI}

with filters F = R(r) Y(r_hat) that never mix channels, every allowed path
lI ⊗ lF -> lO (|lI - lF| <= lO <= lI + lF) up to the given orders, and the
outputs of paths with the same lO concatenated along channels. k_p =
sqrt(2 lO + 1) / sqrt(avg_num_neighbors) keeps unit-variance features.

Equivariance: if V^l -> D_l(R) V^l and r -> R r then Y^lF -> D_lF Y^lF, R is
invariant, and C intertwines, so L^lO -> D_lO(R) L^lO; it depends on
positions only through r_ab = x_b - x_a (translation invariance) and sums
over neighbours (permutation equivariance).

Implementation (no Python loop over atoms, edges or single paths): the paths of
one input order lI form a block with one constant CG matrix C_lI [D_F, 2lI+1, K_lI],
so per edge and block
    R[e]   = u(r_e) MLP(B(r_e))                # [P, c]          two GEMMs
    A[e]   = Y[e] · C_lI                       # [2lI+1, K_lI]   one GEMM
    msg[e] = A[e]^T V^lI[j_e] * R[e, path(k)]  # [K_lI, c]       one bmm
    out    = index_add over centres i_e        # [n, K, c]
evaluated in cache-sized chunks of edges by :mod:`tfn_md.nn.edge_kernel`, which stores
nothing per edge beyond its inputs, so memory grows as O(E (n_basis + D_F)) at any size.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..so3 import clebsch_gordan, sh_dim, sh_slice
from .edge_kernel import (
    Block,
    EdgePlan,
    MLPRadial,
    TableRadial,
    fused_edge_conv,
    tracing_for_compiler,
)
from .radial import RadialMLP

__all__ = ["Edges", "TFNConvolution", "tfn_paths"]


@dataclass
class Edges:
    """What every convolution reads per edge e = (centre i <- neighbour j):
    ``index`` [2, E] (row 0 the centre i, row 1 the neighbour j), ``length`` |r_ij| [E],
    ``sh`` Y(r_ij_hat) [E, (l_max+1)^2], ``basis`` B(|r_ij|) [E, n_basis] and ``envelope``
    u(|r_ij|) [E] (basis and envelope None where every convolution reads a table, the
    envelope also without a cutoff)."""

    index: Tensor
    length: Tensor
    sh: Tensor
    basis: Tensor | None
    envelope: Tensor | None

    def head(self, m: int) -> "Edges":
        """The first ``m`` edges."""
        def cut(t):
            return None if t is None else t[:m]

        return Edges(self.index[:, :m], self.length[:m], self.sh[:m], cut(self.basis),
                     cut(self.envelope))


def tfn_paths(l_in: int, l_filter: int, l_out: int) -> list[tuple[int, int, int]]:
    """All (lI, lF, lO) with lI <= l_in, lF <= l_filter, lO <= l_out and the triangle rule,
    sorted by (lI, lO, lF): the edge kernel's block order."""
    paths = [
        (li, lf, lo)
        for li in range(l_in + 1)
        for lo in range(l_out + 1)
        for lf in range(l_filter + 1)
        if abs(li - lf) <= lo <= li + lf
    ]
    missing = set(range(l_out + 1)) - {p[2] for p in paths}
    if missing:
        raise ValueError(f"no path reaches output orders {sorted(missing)}")
    return paths


class TFNConvolution(nn.Module):
    """Features [n, c, (l_in+1)^2] -> list over lO of [n, c * n_paths(lO), 2lO+1].

    Args:
        channels: c, the number of channels (filters are channel-wise).
        l_in, l_filter, l_out: maximal rotation orders of input, filter, output.
        n_basis, radial_hidden: radial MLP sizes.
        avg_num_neighbors: the neighbour sum is divided by its square root.
    """

    def __init__(
        self,
        channels: int,
        l_in: int,
        l_filter: int,
        l_out: int,
        n_basis: int,
        radial_hidden: int,
        avg_num_neighbors: float = 1.0,
    ):
        super().__init__()
        self.paths = tfn_paths(l_in, l_filter, l_out)
        self.l_in, self.l_filter, self.l_out = l_in, l_filter, l_out
        self.channels = channels
        self.avg_num_neighbors = float(avg_num_neighbors)
        d_f = sh_dim(l_filter)
        # CG blocks of each path, scaled to keep unit variance, kept in float64 outside the
        # module's buffers so a float32 -> float64 round trip of the model cannot round them
        self._cg64 = [clebsch_gordan(lf, li, lo) * math.sqrt(2 * lo + 1)
                      for li, lf, lo in self.paths]  # [2lF+1, 2lI+1, 2lO+1] each
        self._d_f = d_f
        self._plans: dict = {}
        self.n_paths_out = [sum(1 for p in self.paths if p[2] == lo) for lo in range(l_out + 1)]
        self.radial = RadialMLP(n_basis, radial_hidden, len(self.paths), channels)
        # how the edge kernel runs its chunks: None as written, or a chunk-body maker
        # (see fused_edge_conv(kernels=...); set for inference by tfn_md.inference)
        self.chunk_kernels = None
        # (coefficients [N, 4, P c] float64, h) of the tabulated radial functions, or None
        # for the MLP (see tfn_md.nn.radial_table; set by TFN.tabulate, never trained)
        self.table: tuple[Tensor, float] | None = None

    def plan(self, dtype: torch.dtype, device, l_out: int) -> tuple:
        """The edge kernel's constants for the paths with lO <= ``l_out``, in ``dtype`` on
        ``device`` (built once, cached): (EdgePlan, column order grouped by lO [K],
        radial MLP output rows of these paths [P' c] or None for all, their table
        coefficients [N, 4, P' c] or None without a table)."""
        key = (dtype, str(device), l_out)
        if key in self._plans:
            return self._plans[key]
        kept = [q for q, path in enumerate(self.paths) if path[2] <= l_out]
        paths = [self.paths[q] for q in kept]
        blocks, col = [], 0
        for li in range(self.l_in + 1):
            members = [q for q, path in enumerate(paths) if path[0] == li]
            widths = [2 * paths[q][2] + 1 for q in members]
            c3 = torch.zeros(self._d_f, 2 * li + 1, sum(widths), dtype=torch.float64)
            groups, q0 = [], 0
            for q, width in zip(members, widths):
                c3[sh_slice(paths[q][1]), :, q0 : q0 + width] = self._cg64[kept[q]]
                last = groups[-1] if groups else None
                if last and last[4] == width and last[1] == q and last[3] == q0:
                    groups[-1] = (last[0], q + 1, last[2], q0 + width, width)
                else:
                    groups.append((q, q + 1, q0, q0 + width, width))
                q0 += width
            if members:
                blocks.append(Block(
                    rows=sh_slice(li), cols=slice(col, col + q0),
                    c2=c3.reshape(self._d_f, -1).to(dtype=dtype, device=device),
                    groups=tuple(groups)))
            col += q0
        # output columns in path order -> grouped by lO (the concatenation)
        starts = [0]
        for _, _, lo in paths:
            starts.append(starts[-1] + 2 * lo + 1)
        order = sorted(range(len(paths)), key=lambda p: paths[p][2])
        by_lo = torch.tensor([k for p in order for k in range(starts[p], starts[p + 1])],
                             device=device)
        c = self.channels
        rows = None if len(kept) == len(self.paths) else torch.tensor(
            [q * c + k for q in kept for k in range(c)], device=device)
        table = None
        if self.table is not None:  # the table's columns of these paths, in dtype on device,
            coef = self.table[0] if rows is None else self.table[0][:, :, rows.cpu()]
            coef = torch.cat([coef, coef.new_zeros(1, *coef.shape[1:])])  # + zero beyond r_c
            table = coef.to(dtype=dtype, device=device).contiguous()
        self._plans[key] = (EdgePlan(tuple(blocks), col), by_lo, rows, table)
        return self._plans[key]

    def set_table(self, table: tuple[Tensor, float] | None) -> None:
        """Use the tabulated radial functions ``table`` = (coefficients [N, 4, P c], h), or
        the MLP again with None."""
        self.table = table
        self._plans.clear()

    @property
    def out_channels(self) -> list[int]:
        """Channels per output order after concatenation: c * n_paths(lO)."""
        return [self.channels * n for n in self.n_paths_out]

    def forward(self, x: Tensor, edges: Edges, l_out: int | None = None,
                n_out: int | None = None) -> list[Tensor]:
        """
        x:      [n, c, (l_in+1)^2] input features V
        edges:  the per-edge inputs (:class:`Edges`; harmonics up to >= l_filter)
        l_out:  compute only the outputs of order <= l_out (default: all); the others are
                never used when, e.g., only the energy is wanted
        n_out:  outputs for the first n_out atoms only (every edge's centre must be one of
                them; default n): a receptive field's inner layers (:mod:`tfn_md.receptive`)
        Returns blocks [n_out, c * n_paths(lO), 2lO+1] for lO = 0..l_out.
        """
        n, c = (x.shape[0] if n_out is None else n_out), self.channels
        l_out = self.l_out if l_out is None else min(l_out, self.l_out)
        centre, neighbour = edges.index[0], edges.index[1]
        plan, by_lo, rows, table = self.plan(x.dtype, x.device, l_out)
        xt = x[:, :, : sh_dim(self.l_in)].transpose(1, 2)  # [n, D_in, c]
        if tracing_for_compiler():  # a GEMM's output is stored, not folded into the gathers
            xt = torch.matmul(torch.eye(xt.shape[1], dtype=xt.dtype, device=xt.device), xt)
        xt = xt.contiguous()
        sh = edges.sh[:, : self._d_f]
        if table is not None:
            radial, edge_in, params = TableRadial(1.0 / self.table[1]), (edges.length,), (table,)
        else:
            r = self.radial
            w2, b2 = r.out.weight, r.out.bias
            if rows is not None:  # the radial functions of the computed paths only
                w2, b2 = w2[rows], b2[rows]
            envelope = edges.envelope
            if envelope is None:
                envelope = edges.length.new_ones(edges.length.shape[0])
            radial, edge_in = MLPRadial(), (edges.basis, envelope)
            params = (r.hidden.weight, r.hidden.bias, w2, b2)
        out = fused_edge_conv(xt, sh, edge_in, params, radial, neighbour, centre, plan, n,
                              self.chunk_kernels)
        out = out[:, by_lo]  # [n, K, c], columns grouped by lO
        out = out * (1.0 / math.sqrt(self.avg_num_neighbors))
        blocks, col = [], 0
        for lo in range(l_out + 1):
            n_p = self.n_paths_out[lo]
            width = n_p * (2 * lo + 1)
            block = out[:, col : col + width, :].reshape(n, n_p, 2 * lo + 1, c)
            blocks.append(block.permute(0, 3, 1, 2).reshape(n, c * n_p, 2 * lo + 1))
            col += width
        return blocks
