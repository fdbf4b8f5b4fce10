"""Point-wise TFN layers acting on features x [n_atoms, channels, (l_max+1)^2].

The paper stores features as a dict {l: [n_atoms, channels, 2l+1]}; tfn_md
keeps the same numbers in one tensor with the l-blocks side by side (columns
``l*l .. (l+1)^2 - 1``), which lets every op below be one batched kernel.

* :class:`SelfInteraction` - per-l channel mixing, y^l_{c'm} = sum_c W^l_{c'c} x^l_{cm}
  (+ b_{c'} for l = 0 only). Commutes with rotations because it never mixes m.
* :class:`NormNonlinearity` - l = 0: SiLU(x); l > 0: x * sigmoid(|x| + b_c).
  The paper's form is x * NL(|x| + b) / |x|; with NL a softplus that map is
  discontinuous where a vector feature vanishes (e.g. every atom of an fcc
  bulk crystal sits at an inversion centre), so the energy would jump. The
  gate sigmoid(|x| + b) belongs to the same family (NL(s) = |x| sigmoid(s)),
  depends on x only through |x| (hence equivariant) and makes the layer C^1 at x = 0.
"""

import torch
from torch import Tensor, nn

from ..so3 import sh_slice

__all__ = ["NormNonlinearity", "SelfInteraction", "safe_norm"]


def safe_norm(x: Tensor, dim: int = -1, eps: float = 1e-12) -> Tensor:
    """|x| along ``dim`` with a finite (zero) gradient at x = 0."""
    sq = (x * x).sum(dim)
    return torch.sqrt(sq.clamp_min(eps * eps))


class SelfInteraction(nn.Module):
    """Per-l linear map [n, c_in(l), 2l+1] -> [n, c_out, 2l+1], bias on l = 0 only.

    ``in_channels`` lists c_in per l = 0..l_max (the concatenation of paths can
    give each l a different width). Output is [n, c_out, (l_max+1)^2].
    """

    def __init__(self, in_channels: list[int], out_channels: int):
        super().__init__()
        self.l_max = len(in_channels) - 1
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(out_channels, c) / c**0.5) for c in in_channels]
        )
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, blocks: list[Tensor]) -> Tensor:
        """blocks[l]: [n, c_in(l), 2l+1] -> [n, c_out, (l_max+1)^2]."""
        out = [torch.einsum("dc,ncm->ndm", w, x) for w, x in zip(self.weights, blocks)]
        out[0] = out[0] + self.bias[:, None]
        return torch.cat(out, dim=-1)


class NormNonlinearity(nn.Module):
    """SiLU on l = 0; x * sigmoid(|x| + b_c) on every l > 0 block. [n, c, D] -> same."""

    def __init__(self, channels: int, l_max: int):
        super().__init__()
        self.l_max = l_max
        self.bias = nn.Parameter(torch.zeros(l_max, channels))

    def forward(self, x: Tensor) -> Tensor:
        if self.l_max == 0 or x.shape[-1] == 1:  # scalars only
            return torch.nn.functional.silu(x)
        scalars = torch.nn.functional.silu(x[..., :1])  # [n, c, 1]
        blocks = [x[..., sh_slice(l)] for l in range(1, self.l_max + 1)]  # [n, c, 2l+1] each
        norms = torch.stack([safe_norm(b) for b in blocks], dim=0)  # [l_max, n, c]
        gates = torch.sigmoid(norms + self.bias[:, None, :])  # [l_max, n, c]
        # each gate broadcast over its block's 2l+1 columns (no gather with repeated
        # indices: its backward is a scatter that Inductor's CPU codegen mishandles)
        return torch.cat([scalars, *(b * g[..., None] for b, g in zip(blocks, gates))], dim=-1)
