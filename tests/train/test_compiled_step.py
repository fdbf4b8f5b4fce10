"""The compiled training step (tfn_md.train.compiled_step) against the eager one: the same
loss and the same weight gradients (forces and stress in the loss: a double backward) for
batches of other sizes than the one it was traced on, and a clear fallback when it fails."""

import copy

import pytest
import torch

from tests.helpers import emt_dataset
from tfn_md.data.loader import collate_batch
from tfn_md.train.compiled_step import CompiledStep
from tfn_md.train.config import TrainConfig
from tfn_md.train.trainer import Trainer, batch_loss, label_counts


def _trainer(tmp_path):
    data = emt_dataset(tmp_path / "d.h5", n_cu=6, n_mol=9)
    return Trainer(TrainConfig.from_dict({
        "data": {"train": str(data), "batch_size": 4, "valid_fraction": 0.2},
        # the learn loop's production size: 32 channels, l_max 2, two layers, heads
        "model": {"channels": 32, "l_max": 2, "layers": 2, "cutoff": 4.0, "energy_heads": 4},
        "loss": {"energy": 1.0, "forces": 10.0, "stress": 10.0, "energy_nll": 1e-3},
        "run": {"out": str(tmp_path / "run"), "dtype": "float32", "plots": False,
                "compile": True},
    }), progress=False)


def _grads(model, items, step=None, weights=None):
    """(loss, flattened weight gradients [float64]) of one batch, eager or through ``step``."""
    dtype = model.e0.dtype
    graph, t = collate_batch(items)
    graph, t = graph.to(dtype=dtype), t.to(dtype=dtype)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    if step is not None:
        loss = step.accumulate(graph, t, label_counts(t, step.weights))
    else:
        loss, _ = batch_loss(model, graph, t, weights, True)
        loss.backward()
        loss = float(loss.detach())
    return loss, torch.cat([p.grad.flatten() for p in model.parameters()]).double()


def _split(trainer):
    items = [trainer.train_set[i] for i in range(len(trainer.train_set))]
    crystal = [bool(it[0].cell.abs().sum() > 0) for it in items]
    return ([it for it, c in zip(items, crystal) if not c],
            [it for it, c in zip(items, crystal) if c])


def test_compiled_step_matches_eager_on_new_batch_sizes(tmp_path):
    trainer = _trainer(tmp_path)
    step, weights = trainer.step, trainer.cfg.loss
    assert isinstance(step, CompiledStep)
    mol, cry = _split(trainer)
    assert len(mol) >= 6 and len(cry) >= 4
    # the first batch (energy, forces, stress labels; molecules and cells) is traced and
    # compiled; then batches of other sizes (atoms, edges, structures) run through it
    _grads(trainer.model, [mol[0], cry[0], mol[1], cry[1]], step)
    assert list(step.programs.values()) != [None], "the compiled step was not kept"
    program = next(iter(step.programs.values()))
    # the truth is the eager step in float64: the compiled float32 gradients must be as
    # close to it as the eager float32 ones (float32 rounding, not a wrong derivative)
    model64 = copy.deepcopy(trainer.model).double()
    for batch in ([mol[2], cry[2], mol[3]], [cry[3], mol[4]], [mol[5], mol[0], mol[1], cry[2],
                  mol[3]], [cry[1]]):
        loss_64, g_64 = _grads(model64, batch, weights=weights)
        loss_e, g_e = _grads(trainer.model, batch, weights=weights)
        loss_c, g_c = _grads(trainer.model, batch, step)
        assert loss_c == pytest.approx(loss_64, rel=1e-4)
        err_e, err_c = float((g_e - g_64).norm()), float((g_c - g_64).norm())
        assert err_c <= 3 * err_e + 1e-6 * float(g_64.norm()), (err_c, err_e)
    assert list(step.programs.values()) == [program]  # one program: the shapes stayed symbolic


def test_a_failing_compile_warns_and_trains_eagerly(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)
    molecules, _ = _split(trainer)

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match="compiled training step failed.*no compiler here"):
        loss_1, g_1 = _grads(trainer.model, molecules[:4], trainer.step)
    assert list(trainer.step.programs.values()) == [None]
    loss_2, g_2 = _grads(trainer.model, molecules[:4], trainer.step)  # eager, no warning
    loss_e, g_e = _grads(trainer.model, molecules[:4], weights=trainer.cfg.loss)
    assert loss_1 == loss_2 == loss_e
    assert torch.equal(g_1, g_e) and torch.equal(g_2, g_e)


def test_float32_differences_are_judged_against_float64(tmp_path, monkeypatch):
    """Above the float32 tolerance, the program is kept only if its error against the
    float64 eager step is of the size of the eager float32 step's (rounding), and the
    model comes back as it was (dtype, weights, gradients)."""
    from tfn_md.train import compiled_step

    trainer = _trainer(tmp_path)
    molecules, _ = _split(trainer)
    before = copy.deepcopy(trainer.model.state_dict())
    calls = []
    real = CompiledStep._float64_gradient

    def spy(self, *args):
        calls.append(1)
        return real(self, *args)

    monkeypatch.setattr(CompiledStep, "_float64_gradient", spy)
    monkeypatch.setitem(compiled_step._TOL, torch.float32, -1.0)  # every check fails plainly
    loss_c, g_c = _grads(trainer.model, molecules[:4], trainer.step)
    assert calls and list(trainer.step.programs.values()) != [None]  # rounding: kept
    loss_e, g_e = _grads(trainer.model, molecules[:4], weights=trainer.cfg.loss)
    assert torch.equal(g_c, g_e)  # the first batch of a kind keeps the eager gradients
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    # a wrong program (gradients 1 % off) is not rounding: warned about and dropped
    (tmp_path / "skewed").mkdir()
    skewed = _trainer(tmp_path / "skewed")
    real_compile = torch.compile

    def compile_skewed(fn, **kwargs):
        program = real_compile(fn, **kwargs)

        def run(*args):
            loss, grads, readout, energy = program(*args)
            return loss, [g * 1.01 for g in grads], readout, energy
        return run

    monkeypatch.setattr(torch, "compile", compile_skewed)
    monkeypatch.setitem(compiled_step._TOL, torch.float32, 1e-4)
    with pytest.warns(UserWarning, match="gradients differ from the eager ones"):
        _grads(skewed.model, _split(skewed)[0][:4], skewed.step)
    assert list(skewed.step.programs.values()) == [None]
