"""The fused edge kernel (radial MLP inside) against autograd's numerical checks and
against the same mathematics written with plain autograd ops, with many chunks."""

import numpy as np
import pytest
import torch

import tfn_md.inference.chunks as chunks
import tfn_md.inference.compiled as whole_program
import tfn_md.nn.edge_kernel as edge_kernel
from tests.helpers import make_model, triclinic_cu
from tfn_md import TFNCalculator
from tfn_md.nn.convolution import TFNConvolution
from tfn_md.nn.edge_kernel import MLPRadial, fused_edge_conv


def setup(e=40, n=5, c=3, n_basis=4, l_out=2):
    """A convolution 2 x 2 -> 2 and its kernel plan for outputs up to ``l_out`` (l_out = 0
    gives blocks with one output column: the kernel's matrix-vector special cases)."""
    gen = torch.Generator().manual_seed(0)
    conv = TFNConvolution(c, 2, 2, 2, n_basis, 8).double()
    plan, _, rows, _ = conv.plan(torch.float64, "cpu", l_out)
    if rows is not None:  # keep the radial functions of the computed paths only
        conv.radial.out.weight.data = conv.radial.out.weight.data[rows]
        conv.radial.out.bias.data = conv.radial.out.bias.data[rows]

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)

    inputs = (rand(n, 9, c), rand(e, 9), rand(e, n_basis), rand(e))
    src = torch.randint(0, n, (e,), generator=gen)
    dst = torch.randint(0, n, (e,), generator=gen)
    return conv, plan, inputs, src, dst


@pytest.mark.parametrize("l_out", [2, 0])
def test_fused_edge_conv_gradients(monkeypatch, l_out):
    monkeypatch.setattr(edge_kernel, "CHUNK_ELEMENTS", 200)  # forces many small chunks
    conv, plan, inputs, src, dst = setup(l_out=l_out)
    params = tuple(conv.radial.parameters())

    def f(xt, y, basis, env, *radial):
        return fused_edge_conv(xt, y, (basis, env), radial, MLPRadial(), src, dst, plan)

    assert torch.autograd.gradcheck(f, inputs + params)
    assert torch.autograd.gradgradcheck(f, inputs + params)  # training on forces needs this


@pytest.mark.parametrize("l_out", [2, 0])
def test_fused_edge_conv_matches_unfused(monkeypatch, l_out):
    """out[i, k, c] = sum_e w[e, p(k), c] sum_m A[e, m, k] x[j_e, m, c] by einsum."""
    monkeypatch.setattr(edge_kernel, "CHUNK_ELEMENTS", 300)
    conv, plan, (xt, y, basis, env), src, dst = setup(e=60, l_out=l_out)
    r = conv.radial
    w = r.out(r.act(r.hidden(basis))).view(60, -1, xt.shape[2]) * env[:, None, None]
    cols = []
    for b in plan.blocks:
        a = (y @ b.c2).view(y.shape[0], b.rows.stop - b.rows.start, -1)
        msg = torch.einsum("emk,emc->ekc", a, xt[src][:, b.rows])
        for p0, p1, q0, q1, m in b.groups:
            seg = msg[:, q0:q1].reshape(-1, p1 - p0, m, xt.shape[2]) * w[:, p0:p1, None]
            cols.append(seg.reshape(y.shape[0], q1 - q0, -1))
    expected = torch.zeros(xt.shape[0], plan.n_cols, xt.shape[2], dtype=torch.float64)
    expected.index_add_(0, dst, torch.cat(cols, 1))
    out = fused_edge_conv(xt, y, (basis, env), tuple(conv.radial.parameters()), MLPRadial(),
                          src, dst, plan)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_compiled_kernel_matches_eager(monkeypatch, compiler):
    """TFNCalculator(compile=True) runs the torch.compile'd chunk bodies (forced here, not
    timed against eager) and gives the eager energy, forces and stress, also with a last
    chunk shorter than the others (padded)."""
    monkeypatch.setattr(chunks, "AUTOTUNE", False)
    monkeypatch.setattr(whole_program, "MAX_EDGES", 0)  # the chunk kernels, not a whole program
    monkeypatch.setattr(edge_kernel, "CHUNK_ELEMENTS", 4096)  # several chunks
    atoms = triclinic_cu(repeat=(2, 2, 1))
    model = make_model(species=["Cu"], cutoff=4.5)
    results = []
    for compile in (False, True):
        calc = TFNCalculator(model, compile=compile)
        calc.calculate(atoms.copy(), ["energy", "forces", "stress"], ["positions"])
        results.append(calc.results)
        if compile:  # every chunk body in use is the compiled one
            kernels = [k for conv in calc.model.convolutions
                       for plan, *_ in conv._plans.values() for k in plan.kernels.values()]
            assert len(kernels) == 4 and all(is_compiled for _, is_compiled in kernels)
    eager, compiled = results
    assert abs(compiled["energy"] - eager["energy"]) < 1e-10
    np.testing.assert_allclose(compiled["forces"], eager["forces"], atol=1e-10)
    np.testing.assert_allclose(compiled["stress"], eager["stress"], atol=1e-10)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    """Where torch.compile cannot build the kernel, compile=True warns and stays exact."""

    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(whole_program, "MAX_EDGES", 0)  # the chunk kernels
    atoms = triclinic_cu(repeat=(2, 1, 1))
    model = make_model(species=["Cu"], cutoff=4.5)
    eager = TFNCalculator(model).get_forces(atoms.copy())
    with pytest.warns(RuntimeWarning, match="torch.compile of the edge kernel failed"):
        forces = TFNCalculator(model, compile=True).get_forces(atoms.copy())
    np.testing.assert_allclose(forces, eager, atol=1e-12)
