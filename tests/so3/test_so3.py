"""Spherical harmonics, Wigner D and Clebsch-Gordan: math properties, and e3nn as an oracle."""

import itertools

import pytest
import torch

from tfn_md.so3 import (
    clebsch_gordan,
    l2_to_matrix,
    matrix_to_l2,
    random_rotation,
    sh_slice,
    so3_generators,
    spherical_harmonics,
    wigner_D,
)

L_MAX = 4
F64 = torch.float64
# the cyclic change of coordinates that maps tfn_md's basis onto e3nn's (harmonics docstring)
P = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64)


def _vectors(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64)


@pytest.mark.parametrize("l", range(L_MAX + 1))
def test_harmonics_equivariant(l):
    r = _vectors()
    for seed in range(5):
        rot = random_rotation(dtype=F64, seed=seed)
        lhs = spherical_harmonics(r @ rot.T, L_MAX)[:, sh_slice(l)]
        rhs = spherical_harmonics(r, L_MAX)[:, sh_slice(l)] @ wigner_D(l, rot).T
        assert (lhs - rhs).abs().max() < 1e-10


def test_harmonics_normalisation_and_poles():
    r = torch.cat([_vectors(), torch.tensor([[0, 0, 1.0], [0, 0, -2.0]], dtype=F64)])
    r.requires_grad_(True)
    y = spherical_harmonics(r, L_MAX)
    for l in range(L_MAX + 1):
        sq = (y[:, sh_slice(l)] ** 2).sum(-1)
        assert torch.allclose(sq, torch.full_like(sq, 2 * l + 1), atol=1e-12)
    (grad,) = torch.autograd.grad(y.sum(), r)
    assert torch.isfinite(grad).all()
    # Y_l0 at the north pole is sqrt(2l+1); others vanish
    pole = y[-2]
    for l in range(L_MAX + 1):
        expected = torch.zeros(2 * l + 1, dtype=F64)
        expected[l] = (2 * l + 1) ** 0.5
        assert torch.allclose(pole[sh_slice(l)], expected, atol=1e-12)


def test_harmonics_of_zero_vector():
    r = torch.zeros(3, 3, dtype=F64, requires_grad=True)
    y = spherical_harmonics(r, L_MAX)
    assert torch.equal(y[:, 0], torch.ones(3, dtype=F64))
    assert torch.equal(y[:, 1:], torch.zeros_like(y[:, 1:]))
    (grad,) = torch.autograd.grad(y.sum(), r)
    assert torch.isfinite(grad).all()


def test_harmonics_float32_matches_float64():
    r = _vectors()
    y64 = spherical_harmonics(r, L_MAX)
    y32 = spherical_harmonics(r.float(), L_MAX)
    assert y32.dtype == torch.float32
    assert (y32.double() - y64).abs().max() < 1e-5


@pytest.mark.parametrize("l", range(L_MAX + 1))
def test_generators_lie_algebra(l):
    jx, jy, jz = so3_generators(l)
    for a, b, c in [(jx, jy, jz), (jy, jz, jx), (jz, jx, jy)]:
        assert (a @ b - b @ a - c).abs().max() < 1e-10
        assert (a + a.T).abs().max() < 1e-12  # antisymmetric


@pytest.mark.parametrize("l", range(L_MAX + 1))
def test_wigner_is_a_representation(l):
    r1, r2 = random_rotation(dtype=F64, seed=1), random_rotation(dtype=F64, seed=2)
    d1, d2, d12 = wigner_D(l, r1), wigner_D(l, r2), wigner_D(l, r1 @ r2)
    assert (d1 @ d2 - d12).abs().max() < 1e-10
    assert (d1 @ d1.T - torch.eye(2 * l + 1, dtype=F64)).abs().max() < 1e-10


def test_wigner_l1_is_permuted_rotation():
    rot = random_rotation(dtype=F64, seed=5)
    assert (wigner_D(1, rot) - P @ rot @ P.T).abs().max() < 1e-12


def test_l2_cartesian_map_intertwines():
    y = torch.randn(7, 5, dtype=F64)
    rot = random_rotation(dtype=F64, seed=11)
    t = l2_to_matrix(y)
    assert (t - t.transpose(1, 2)).abs().max() < 1e-14
    assert t.diagonal(dim1=1, dim2=2).sum(-1).abs().max() < 1e-14
    assert (l2_to_matrix(y @ wigner_D(2, rot).T) - rot @ t @ rot.T).abs().max() < 1e-12
    assert (matrix_to_l2(t) - y).abs().max() < 1e-12


TRIPLES = [
    (a, b, c)
    for a, b, c in itertools.product(range(L_MAX + 1), repeat=3)
    if abs(a - b) <= c <= a + b
]


@pytest.mark.parametrize("l1,l2,l3", TRIPLES)
def test_clebsch_gordan_intertwines(l1, l2, l3):
    cg = clebsch_gordan(l1, l2, l3)
    assert cg.shape == (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1)
    assert abs(cg.norm() - 1) < 1e-12
    for seed in range(3):
        rot = random_rotation(dtype=F64, seed=seed)
        d1, d2, d3 = wigner_D(l1, rot), wigner_D(l2, rot), wigner_D(l3, rot)
        lhs = torch.einsum("ijk,ia,jb->abk", cg, d1, d2)
        rhs = torch.einsum("abk,ck->abc", cg, d3)
        assert (lhs - rhs).abs().max() < 1e-10


def test_clebsch_gordan_rejects_triangle_violation():
    with pytest.raises(ValueError, match="triangle"):
        clebsch_gordan(1, 1, 3)


# ---- e3nn as an independent oracle -------------------------------------------------

o3 = pytest.importorskip("e3nn.o3")


@pytest.mark.parametrize("l", range(L_MAX + 1))
def test_harmonics_match_e3nn(l):
    r = _vectors()
    ours = spherical_harmonics(r, L_MAX)[:, sh_slice(l)]
    theirs = o3.spherical_harmonics(l, r @ P.T, normalize=True, normalization="component")
    assert (ours - theirs).abs().max() < 1e-12


@pytest.mark.parametrize("l", range(L_MAX + 1))
def test_wigner_matches_e3nn(l):
    angles = o3.rand_angles(dtype=F64)
    rot = P.T @ o3.angles_to_matrix(*angles) @ P  # the same rotation in our coordinates
    theirs = o3.wigner_D(l, *angles)
    # e3nn builds D from generator constants stored in float32: its own D_1 differs
    # from its angles_to_matrix by ~6e-7, so this comparison is float32-accurate only
    assert (wigner_D(l, rot) - theirs).abs().max() < 1e-5


@pytest.mark.parametrize("l1,l2,l3", TRIPLES)
def test_clebsch_gordan_matches_e3nn(l1, l2, l3):
    # both are the unique (up to scale) invariant of l1 x l2 x l3, with unit norm,
    # in the same basis: they agree up to a global sign
    theirs = o3.wigner_3j(l1, l2, l3, dtype=F64)
    overlap = (clebsch_gordan(l1, l2, l3) * theirs).sum()
    assert abs(abs(overlap) - 1) < 1e-10
