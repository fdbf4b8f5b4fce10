"""The engine's choice of route for each call (tfn_md.inference.engine), and the calculator
as arguments in, results out."""

import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError

from tests.helpers import ethanol, make_model, triclinic_cu
from tfn_md import TFNCalculator
from tfn_md.inference import compiled
from tfn_md.inference.chunks import compiled_chunk
from tfn_md.inference.engine import Engine

ENERGY_FORCES = ("energy", "forces")


def test_routes():
    heads = make_model(energy_heads=4)
    assert Engine(heads, compile=False).route(("energy", "forces_spread"), 100) == "ensemble"
    assert Engine(heads, compile=False).route(ENERGY_FORCES, 100) == "eager"
    one = Engine(make_model(), compile=True)  # compiling is left to the first "program" call
    assert one.route(ENERGY_FORCES, 100) == "program"
    assert one.route(("energy", "vectors"), 100) == "eager"  # the program has no vectors
    assert one.route(ENERGY_FORCES, compiled.MAX_EDGES + 1) == "eager"
    # MLP radials of a Gaussian basis do not vanish beyond the cutoff: no padded program
    assert Engine(make_model(basis="gaussian"), exact=True, compile=True).compiled is None
    assert Engine(make_model(), compile=False).route(ENERGY_FORCES, 100) == "eager"


def test_large_graphs_get_compiled_chunks_after_many_calls(monkeypatch):
    """compile="auto": eager calls of graphs above MAX_EDGES are counted; after
    COMPILE_AFTER of them the edge kernel's chunks are compiled (compile=True: at once)."""
    monkeypatch.delenv("TFN_MD_COMPILE", raising=False)  # "auto" as users get it
    engine = Engine(make_model(), compile="auto")
    convs = engine.model.convolutions
    for _ in range(compiled.COMPILE_AFTER):
        assert engine.route(ENERGY_FORCES, compiled.MAX_EDGES + 1) == "eager"
    assert all(conv.chunk_kernels is None for conv in convs)
    engine.route(ENERGY_FORCES, compiled.MAX_EDGES + 1)
    assert all(conv.chunk_kernels is compiled_chunk for conv in convs)
    at_once = Engine(make_model(), compile=True).model.convolutions
    assert all(conv.chunk_kernels is compiled_chunk for conv in at_once)
    never = Engine(make_model(), compile=False)
    for _ in range(compiled.COMPILE_AFTER + 1):
        never.route(ENERGY_FORCES, compiled.MAX_EDGES + 1)
    assert all(conv.chunk_kernels is None for conv in never.model.convolutions)


@pytest.mark.parametrize("atoms", [ethanol(), triclinic_cu()], ids=["ethanol", "cu"])
def test_calculator_results_are_the_engines(atoms):
    model = make_model(species=["H", "C", "O", "Cu"], energy_heads=3)
    properties = ["energy", "forces", "energies", "vectors", "forces_spread"]
    if atoms.pbc.all():
        properties.append("stress")
    calc = TFNCalculator(model, compile=False)
    calc.calculate(atoms, properties)
    expected = Engine(model, compile=False)(atoms.copy(), properties)
    assert calc.results.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(calc.results[key], value, err_msg=key)


def test_engine_refuses_what_the_model_cannot_give():
    engine = Engine(make_model(), compile=False)
    with pytest.raises(PropertyNotImplementedError, match="several energy heads"):
        engine(ethanol(), ("energy", "energy_spread"))
    with pytest.raises(PropertyNotImplementedError, match="fully periodic"):
        engine(ethanol(), ("energy", "stress"))
