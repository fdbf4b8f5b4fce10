"""Helpers that several tests use (fixtures are in conftest.py).

* Models and structures: :func:`make_model` (a small random-weight TFN), :func:`ethanol`,
  :func:`triclinic_cu`, :func:`random_rotation_np`; ``TOL`` per dtype.
* Equivariance: :func:`assert_equivariant` (below).
* Finite differences: :func:`finite_difference_errors` (ASE's numerical forces and stress
  against the calculator's).
* Training data: :func:`emt_dataset`, :func:`small_config`; :class:`SlowEMT`, the reference
  of the ``tfn-md learn`` tests.

``assert_equivariant`` (in the style of e3nn's ``e3nn.util.test.assert_equivariant``):
rotate every input by its representation, run the function, and compare with the
outputs rotated by theirs.

A representation is given per tensor, acting on its last axis:

* a list of orders ``[l0, l1, ...]``: blocks of 2l+1 columns side by side, rotated by
  the real Wigner matrices ``D_l(R)`` of :mod:`tfn_md.so3` (block-diagonal);
* ``"xyz"``: Cartesian vectors, rotated by R itself;
* ``None``: invariant (not rotated).

:class:`SlowEMT`: ASE's EMT that, for frames the
loop labels (``al_index`` in their info), first sleeps ``delay`` seconds and then appends
"<al_iteration> <al_index> <hash of positions>" to ``log`` once the label is computed.
"""

import hashlib
import importlib
import os
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from tfn_md import TFN
from tfn_md.data import write_atoms
from tfn_md.so3 import random_rotation, wigner_D
from tfn_md.train import TrainConfig

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def require_extra(module: str, extra: str):
    """Import ``module`` of the optional dependency group ``extra`` (``pip install
    ".[extra]"``), or skip the calling test module with a reason. With
    ``TFN_MD_REQUIRE_ENGINES=1`` (set by ``.ci/run``, which installs every extra) a missing
    module is an error instead: CI must run these tests, not skip them."""
    import pytest

    try:
        return importlib.import_module(module)
    except ImportError as err:
        if os.environ.get("TFN_MD_REQUIRE_ENGINES") == "1":
            raise RuntimeError(f"TFN_MD_REQUIRE_ENGINES=1 but {module} does not import "
                               f"({err}): pip install '.[{extra}]'") from err
        pytest.skip(f"{module} is not installed (pip install '.[{extra}]')",
                    allow_module_level=True)


def make_model(species=("H", "C", "O"), dtype=torch.float64, seed=0, **kwargs) -> TFN:
    """A small random-weight model (seeded through a fork of the RNG: no global change)."""
    kwargs = {"channels": 8, "l_max": 2, "layers": 2, "cutoff": 4.0, **kwargs}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TFN(species=list(species), **kwargs)
        # non-trivial E0, scale and gate biases, so tests see every term
        model.e0.uniform_(-2.0, 2.0)
        model.scale.fill_(1.3)
        model.shift.fill_(0.1)
        for nl in model.nonlinearities:
            nl.bias.data.uniform_(-1.0, 1.0)
    return model.to(dtype)


def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


def triclinic_cu(repeat=(1, 1, 1), rattle=0.1, seed=0) -> Atoms:
    """A small triclinic (sheared) Cu cell, smaller than twice a 4-5 A cutoff."""
    atoms = bulk("Cu", "fcc", a=3.6).repeat(repeat)
    cell = atoms.cell.array.copy()
    cell[2] += [0.3, -0.2, 0.1]
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


def random_rotation_np(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def finite_difference_errors(atoms: Atoms, stress: bool = False) -> tuple[float, float | None]:
    """Largest |F - F_numerical| (central differences, eps 1e-4 A) and, with ``stress``,
    largest |sigma - sigma_numerical| (eps 1e-5 strain) of ``atoms.calc``."""
    forces = np.abs(atoms.get_forces() - calculate_numerical_forces(atoms, eps=1e-4)).max()
    if not stress:
        return float(forces), None
    stress_error = np.abs(atoms.get_stress() - calculate_numerical_stress(atoms, eps=1e-5)).max()
    return float(forces), float(stress_error)


def representation(rep, rotation: torch.Tensor) -> torch.Tensor | None:
    """The matrix acting on the last axis: [d, d], or None for invariants."""
    if rep is None:
        return None
    if rep == "xyz":
        return rotation
    return torch.block_diag(*[wigner_D(l, rotation) for l in rep])


def _rotate(x: torch.Tensor, rep, rotation: torch.Tensor) -> torch.Tensor:
    d = representation(rep, rotation)
    return x if d is None else x @ d.T


def assert_equivariant(fn, args, reps_in, reps_out, n_rotations: int = 3, atol: float = 1e-10,
                       seed: int = 0) -> float:
    """Check fn(rot(args)) == rot(fn(args)) for ``n_rotations`` random rotations.

    ``fn`` returns a tensor or a list/tuple of tensors; ``reps_in``/``reps_out`` give one
    representation per argument/output. Returns the largest error found, relative to the
    largest output value (and asserts it is <= ``atol``); also asserts the outputs are not
    all zero, so the check cannot pass vacuously."""
    def as_list(out):
        return list(out) if isinstance(out, (list, tuple)) else [out]

    reference = [y.detach() for y in as_list(fn(*args))]
    assert len(reference) == len(reps_out), "one representation per output"
    scale = max(float(y.abs().max()) for y in reference if y.numel())
    assert scale > 1e-6, "outputs are all zero: the check would be vacuous"
    worst = 0.0
    rotations = random_rotation(n_rotations, dtype=args[0].dtype, seed=seed)
    for rotation in rotations:
        moved = [_rotate(x, rep, rotation) for x, rep in zip(args, reps_in)]
        out = [y.detach() for y in as_list(fn(*moved))]
        for y_rot, y, rep in zip(out, reference, reps_out):
            err = float((y_rot - _rotate(y, rep, rotation)).abs().max()) / scale
            worst = max(worst, err)
    assert worst <= atol, f"equivariance error {worst:.3g} > {atol:.3g}"
    return worst


def emt_dataset(path, n_cu=12, n_mol=12, seed=0):
    """Rattled Cu cells (periodic: stress) and rattled ethanol (EMT knows H, C, O)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_cu):
        a = bulk("Cu", "fcc", a=3.6 + rng.uniform(-0.05, 0.05), cubic=True)
        a.rattle(0.08, seed=int(rng.integers(1 << 30)))
        frames.append(a)
    for k in range(n_mol):
        a = molecule("CH3CH2OH")
        a.rattle(0.05, seed=int(rng.integers(1 << 30)))
        frames.append(a)
    for a in frames:
        a.calc = EMT()
        a.get_potential_energy()
        if a.pbc.all():
            a.get_stress()
    write_atoms(path, frames, append=False)
    return path


def small_config(data, out, epochs=3, **optim) -> TrainConfig:
    optim = {"lr": 1e-2, "ema_decay": 0.8, **optim}
    return TrainConfig.from_dict({
        "data": {"train": str(data), "batch_size": 4, "valid_fraction": 0.2},
        "model": {"channels": 8, "l_max": 1, "layers": 2, "cutoff": 4.0, "radial_hidden": 16},
        "loss": {"energy": 1.0, "forces": 10.0, "stress": 10.0},
        "optim": {"epochs": epochs, **optim},
        "run": {"out": str(out), "seed": 3, "dtype": "float64", "plots": False},
    })


class SlowEMT(EMT):
    """EMT that sleeps ``delay`` s per label and logs each label's key and positions'
    digest to ``log`` (defaults: $SLOW_EMT_DELAY, $SLOW_EMT_LOG, for command lines)."""

    def __init__(self, log: str | None = None, delay: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.log = os.environ.get("SLOW_EMT_LOG", "") if log is None else log
        self.delay = float(os.environ.get("SLOW_EMT_DELAY", "0")) if delay is None else delay

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        labelling = atoms is not None and "al_index" in atoms.info
        if labelling:
            time.sleep(self.delay)
        if system_changes is None:
            super().calculate(atoms, properties)
        else:
            super().calculate(atoms, properties, system_changes)
        if labelling and self.log:
            digest = hashlib.sha256(atoms.positions.tobytes()).hexdigest()[:16]
            with open(self.log, "a") as fh:
                fh.write(f"{atoms.info['al_iteration']} {atoms.info['al_index']} {digest}\n")
