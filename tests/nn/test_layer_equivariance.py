"""Layer by layer: every TFN convolution path (lI, lF, lO) with orders up to 3, the
self-interaction and the norm nonlinearity commute with rotations (float64)."""

import pytest
import torch

from tests.helpers import assert_equivariant
from tfn_md.nn import (
    BesselBasis,
    Edges,
    NormNonlinearity,
    SelfInteraction,
    TFNConvolution,
    polynomial_envelope,
    tfn_paths,
)
from tfn_md.nn.radial_table import tabulate
from tfn_md.so3 import sh_dim, spherical_harmonics

L = 3


def _builds(li: int, lf: int, lo: int) -> bool:
    try:
        tfn_paths(li, lf, lo)  # every output order 0..lo must be reachable
    except ValueError:
        return False
    return True


ORDERS = [
    (li, lf, lo)
    for li in range(L + 1)
    for lf in range(L + 1)
    for lo in range(L + 1)
    if _builds(li, lf, lo)
]


def _seeded(seed):
    gen = torch.Generator().manual_seed(seed)
    return lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)


def test_orders_cover_every_path_up_to_3():
    covered = {p for li, lf, lo in ORDERS for p in tfn_paths(li, lf, lo)}
    every = {(a, b, c) for a in range(L + 1) for b in range(L + 1) for c in range(L + 1)
             if abs(a - b) <= c <= a + b}
    assert covered == every


@pytest.mark.parametrize("table", [False, True], ids=["mlp", "table"])
@pytest.mark.parametrize(("l_in", "l_filter", "l_out"), ORDERS)
def test_convolution_paths(l_in, l_filter, l_out, table):
    c, n, cutoff = 3, 5, 4.0
    with torch.random.fork_rng():
        torch.manual_seed(l_in * 16 + l_filter * 4 + l_out)
        conv = TFNConvolution(c, l_in, l_filter, l_out, n_basis=4, radial_hidden=8,
                              avg_num_neighbors=3.0).double()
    basis = BesselBasis(4, cutoff).double()
    if table:  # the radial functions as cubic Hermite splines (inference)
        conv.set_table(tabulate(lambda r: conv.radial(basis(r)).flatten(1)
                                * polynomial_envelope(r, cutoff, 6)[:, None], cutoff)[:2])
    randn = _seeded(1)
    x = randn(n, c, sh_dim(l_in))  # [n, c, (l_in+1)^2]
    edge_index = torch.tensor([[0, 0, 1, 2, 3, 4, 4, 2], [1, 2, 0, 3, 4, 0, 2, 1]])
    vec = randn(edge_index.shape[1], 3)  # [E, 3]
    vec = vec / vec.norm(dim=1, keepdim=True) * torch.linspace(0.8, 3.5, len(vec))[:, None]

    def fn(features, vectors):
        length = vectors.norm(dim=-1)
        sh = spherical_harmonics(vectors, l_filter)
        env = polynomial_envelope(length, cutoff, 6)
        return conv(features, Edges(edge_index, length, sh, basis(length), env))  # over lO

    # x's last axis holds the blocks l = 0..l_in; the edge vectors are Cartesian
    reps_in = [list(range(l_in + 1)), "xyz"]
    reps_out = [[lo] for lo in range(l_out + 1)]
    assert_equivariant(fn, [x, vec], reps_in, reps_out, atol=1e-10)


def test_self_interaction():
    c_in, c_out, n = [4, 6, 5, 3], 7, 6
    randn = _seeded(2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = SelfInteraction(c_in, c_out).double()
        layer.bias.data.normal_()
    blocks = [randn(n, c, 2 * l + 1) for l, c in enumerate(c_in)]

    def fn(*xs):
        return layer(list(xs))

    assert_equivariant(fn, blocks, [[l] for l in range(4)], [[0, 1, 2, 3]])


def test_norm_nonlinearity():
    c, n = 5, 6
    randn = _seeded(3)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = NormNonlinearity(c, L).double()
        layer.bias.data.uniform_(-1, 1)
    x = randn(n, c, sh_dim(L))
    x[0, 0, 1:] = 0.0  # a vanishing feature: the gate must stay equivariant there too
    assert_equivariant(layer, [x], [[0, 1, 2, 3]], [[0, 1, 2, 3]])


def test_helper_catches_a_non_equivariant_map():
    x = _seeded(4)(5, 3)
    with pytest.raises(AssertionError, match="equivariance error"):
        assert_equivariant(lambda v: v * torch.tensor([1.0, 2.0, 3.0], dtype=v.dtype), [x],
                           ["xyz"], ["xyz"])
