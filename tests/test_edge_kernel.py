"""The fused edge kernel against autograd's numerical checks, with many chunks."""

import torch

import tfn_md.nn.edge_kernel as edge_kernel
from tfn_md.nn.convolution import TFNConvolution
from tfn_md.nn.edge_kernel import fused_edge_conv


def test_fused_edge_conv_gradients(monkeypatch):
    monkeypatch.setattr(edge_kernel, "CHUNK_ELEMENTS", 200)  # forces many small chunks
    gen = torch.Generator().manual_seed(0)
    n, e, c = 5, 40, 3
    conv = TFNConvolution(c, 2, 2, 2, 4, 8)
    plan, _ = conv.plan(torch.float64, "cpu")
    xt = torch.randn(n, 9, c, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(e, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(e, len(conv.paths), c, generator=gen, dtype=torch.float64, requires_grad=True)
    src = torch.randint(0, n, (e,), generator=gen)
    dst = torch.randint(0, n, (e,), generator=gen)

    def f(xt, y, w):
        return fused_edge_conv(xt, y, w, src, dst, plan)

    assert torch.autograd.gradcheck(f, (xt, y, w))
    assert torch.autograd.gradgradcheck(f, (xt, y, w))  # training on forces needs this
