"""The benchmark's e3nn reference computes the same function as tfn_md (independent
harmonics, Clebsch-Gordan and tensor-product code), so speed ratios compare like with like."""

import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ethanol, make_model, triclinic_cu
from tfn_md.graph import atoms_to_graph
from tfn_md.inference.response import compute_response

pytest.importorskip("e3nn")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from e3nn_reference import E3nnTFN


@pytest.mark.parametrize("case", ["ethanol-l2", "ethanol-heads", "cu-l3"])
def test_e3nn_reference_agrees(case):
    if case == "ethanol-l2":
        model, atoms = make_model(cutoff=5.0, l_max=2, layers=3), ethanol()
    elif case == "ethanol-heads":  # a shallow ensemble (the shipped ethanol-gfn2's kind)
        model, atoms = make_model(cutoff=5.0, energy_heads=4), ethanol()
    else:
        model, atoms = make_model(species=["Cu"], cutoff=4.5, l_max=3), triclinic_cu((2, 1, 1))
    graph = atoms_to_graph(atoms, model.cutoff)
    stress = bool(atoms.pbc.all())
    ours = compute_response(model, graph, stress=stress)
    ref = compute_response(E3nnTFN(model), graph, stress=stress)
    scale = ours["forces"].abs().max()
    assert torch.allclose(ours["energy"], ref["energy"], rtol=1e-9, atol=1e-9)
    assert (ours["forces"] - ref["forces"]).abs().max() < 1e-8 * scale
    assert (ours["vectors"] - ref["vectors"]).abs().max() < 1e-8
    # energy-only passes (the benchmark's): both prune the last layer the same way
    lean = compute_response(E3nnTFN(model), graph, stress=stress, energy_only=True)
    assert torch.allclose(ours["energy"], lean["energy"], rtol=1e-9, atol=1e-9)
    assert (ours["forces"] - lean["forces"]).abs().max() < 1e-8 * scale
