"""``assert_equivariant`` (in the style of e3nn's ``e3nn.util.test.assert_equivariant``):
rotate every input by its representation, run the function, and compare with the
outputs rotated by theirs.

A representation is given per tensor, acting on its last axis:

* a list of orders ``[l0, l1, ...]``: blocks of 2l+1 columns side by side, rotated by
  the real Wigner matrices ``D_l(R)`` of :mod:`tfn_md.so3` (block-diagonal);
* ``"xyz"``: Cartesian vectors, rotated by R itself;
* ``None``: invariant (not rotated).
"""

import torch

from tfn_md.so3 import random_rotation, wigner_D


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
