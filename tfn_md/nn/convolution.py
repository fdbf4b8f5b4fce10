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

Implementation (no Python loop over atoms, edges or paths): all paths are one
constant tensor C_cat [D_F, D_in, K] (K = sum_p (2 lO + 1) output columns,
path blocks sorted by lO), so per edge
    A[e]   = Y[e] · C_cat                      # [E, D_in, K]   one GEMM
    msg[e] = V[j_e] @ A[e] * R[e, :, path(k)]  # [E, c, K]      one bmm
    out    = index_add over centres i_e        # [n, c, K]
"""

import math

import torch
from torch import Tensor, nn

from ..so3 import clebsch_gordan, sh_dim, sh_slice
from .radial import RadialMLP

__all__ = ["TFNConvolution", "tfn_paths"]


def tfn_paths(l_in: int, l_filter: int, l_out: int) -> list[tuple[int, int, int]]:
    """All (lI, lF, lO) with lI <= l_in, lF <= l_filter, lO <= l_out and the triangle rule,
    sorted by lO (the order of the concatenated output)."""
    paths = [
        (li, lf, lo)
        for lo in range(l_out + 1)
        for li in range(l_in + 1)
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
        d_f, d_in = sh_dim(l_filter), sh_dim(l_in)
        widths = [2 * lo + 1 for _, _, lo in self.paths]
        n_cols = sum(widths)
        c_cat = torch.zeros(d_f, d_in, n_cols, dtype=torch.float64)
        path_of_col = torch.zeros(n_cols, dtype=torch.long)
        col = 0
        for p, (li, lf, lo) in enumerate(self.paths):
            cg = clebsch_gordan(lf, li, lo) * math.sqrt(2 * lo + 1)  # [2lF+1, 2lI+1, 2lO+1]
            c_cat[sh_slice(lf), sh_slice(li), col : col + 2 * lo + 1] = cg
            path_of_col[col : col + 2 * lo + 1] = p
            col += 2 * lo + 1
        # Constants kept in float64 outside the module's buffers, so that a
        # float32 -> float64 round trip of the model cannot round them.
        self._c_cat64, self._path_of_col = c_cat, path_of_col
        self._constants: dict = {}
        self.n_paths_out = [sum(1 for p in self.paths if p[2] == lo) for lo in range(l_out + 1)]
        self.radial = RadialMLP(n_basis, radial_hidden, len(self.paths), channels)

    def constants(self, dtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
        """(C_cat [D_F, D_in, K] in ``dtype``, path index of each output column [K])."""
        key = (dtype, str(device))
        if key not in self._constants:
            self._constants[key] = (
                self._c_cat64.to(dtype=dtype, device=device),
                self._path_of_col.to(device=device),
            )
        return self._constants[key]

    @property
    def out_channels(self) -> list[int]:
        """Channels per output order after concatenation: c * n_paths(lO)."""
        return [self.channels * n for n in self.n_paths_out]

    def forward(
        self,
        x: Tensor,
        edge_sh: Tensor,
        edge_basis: Tensor,
        edge_envelope: Tensor | None,
        edge_index: Tensor,
    ) -> list[Tensor]:
        """
        x:             [n, c, (l_in+1)^2] input features V
        edge_sh:       [E, >= (l_filter+1)^2] Y(r_ij_hat)
        edge_basis:    [E, n_basis] radial basis B(|r_ij|)
        edge_envelope: [E] smooth cutoff u(|r_ij|) or None
        edge_index:    [2, E] (centre i, neighbour j)
        """
        n, c = x.shape[0], self.channels
        centre, neighbour = edge_index[0], edge_index[1]
        weights = self.radial(edge_basis)  # [E, P, c]
        if edge_envelope is not None:
            weights = weights * edge_envelope[:, None, None]
        c_cat, path_of_col = self.constants(x.dtype, x.device)
        d_f, d_in, n_cols = c_cat.shape
        a = (edge_sh[:, :d_f] @ c_cat.view(d_f, -1)).view(-1, d_in, n_cols)  # [E, D_in, K]
        msg = torch.bmm(x[neighbour, :, :d_in], a)  # [E, c, K]
        msg = msg * weights[:, path_of_col, :].transpose(1, 2)  # [E, c, K]
        out = x.new_zeros(n, c, n_cols).index_add_(0, centre, msg)  # [n, c, K]
        out = out * (1.0 / math.sqrt(self.avg_num_neighbors))
        blocks, col = [], 0
        for lo, n_p in enumerate(self.n_paths_out):
            width = n_p * (2 * lo + 1)
            blocks.append(out[:, :, col : col + width].reshape(n, c * n_p, 2 * lo + 1))
            col += width
        return blocks
