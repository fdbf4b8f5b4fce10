"""Honest train/validation/test splits: by trajectory, or by contiguous time blocks.

Frames a few femtoseconds apart on one MD trajectory are near-duplicates, so a split
that draws frames at random puts a near-copy of almost every test frame in the
training set and reports errors that are too low. Two splits avoid that:

    by="trajectory"  whole trajectories go to one part: the parts share no trajectory.
    by="block"       each trajectory is cut, in time order (``md_frame``), into
                     contiguous blocks of ``block`` frames; whole blocks go to one part,
                     so only the frames at block edges have a neighbour in another part.
    by="random"      frames at random (the old behaviour; flatters models on MD data).

A frame's trajectory is its ``md_trajectory`` info (written by ``tfn-md data sample``
and ``tfn-md learn``); for files written before that field existed it is derived from
``md_run`` and ``md_temperature`` (:func:`tfn_md.data.sources.trajectory_id`, the same
id). Parts are filled to their target sizes in frames, greedily over the units
(trajectories or blocks) in a seeded random order, each unit to the part furthest below
its target, so sizes match the request up to one unit.
"""

from __future__ import annotations

import numpy as np

from tfn_md.data.reader import H5Dataset

__all__ = ["PARTS", "assign_units", "frame_order", "split_indices", "trajectory_ids"]

PARTS = ("train", "val", "test")
MD_TRAJECTORY = "md_trajectory"
MD_RUN = "md_run"
MD_TEMPERATURE = "md_temperature"
MD_FRAME = "md_frame"


def _strings(column: np.ndarray) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in column], dtype=object)


def trajectory_ids(ds: H5Dataset) -> np.ndarray | None:
    """Per-structure trajectory id [S] (object array of str), or None if the file records
    no trajectories. Structures without one get ``""``."""
    from tfn_md.data.sources import trajectory_id

    n = len(ds)
    ids = np.full(n, "", dtype=object)
    known = np.zeros(n, dtype=bool)
    if MD_TRAJECTORY in ds.fields:
        has = ds.mask(MD_TRAJECTORY)
        ids[has] = _strings(ds.column(MD_TRAJECTORY)[has])
        known |= has
    if MD_RUN in ds.fields and MD_TEMPERATURE in ds.fields:
        has = ds.mask(MD_RUN) & ds.mask(MD_TEMPERATURE) & ~known
        runs, temps = ds.column(MD_RUN), ds.column(MD_TEMPERATURE)
        cache: dict = {}
        for i in np.flatnonzero(has):
            key = (runs[i], float(temps[i]))
            if key not in cache:
                run = runs[i].decode() if isinstance(runs[i], bytes) else str(runs[i])
                cache[key] = trajectory_id(run, key[1])
            ids[i] = cache[key]
        known |= has
    if not known.any():
        return None
    return ids


def frame_order(ds: H5Dataset) -> np.ndarray:
    """The time index of each structure within its trajectory: ``md_frame`` where
    recorded, else the row number (files keep frames in the order they were run)."""
    order = np.arange(len(ds), dtype=np.int64)
    if MD_FRAME in ds.fields:
        has = ds.mask(MD_FRAME)
        order[has] = ds.column(MD_FRAME)[has]
    return order


def assign_units(unit_sizes: np.ndarray, targets: list[int], rng: np.random.Generator
                 ) -> np.ndarray:
    """Part (0, 1, 2) of each unit: in a random order, each unit goes to the part with the
    largest remaining room (target minus frames already given). When the targets add up
    to every frame, every unit is placed; otherwise a unit that would take the roomiest
    part further past its target than short of it is left out (-1)."""
    room = np.asarray(targets, dtype=float)
    use_all = room.sum() >= unit_sizes.sum()
    part = np.full(len(unit_sizes), -1, dtype=np.int64)
    for u in rng.permutation(len(unit_sizes)):
        k = int(np.argmax(room))
        if not use_all and room[k] < unit_sizes[u] / 2:
            continue
        part[u] = k
        room[k] -= unit_sizes[u]
    return part


def split_indices(ds: H5Dataset, sizes: list[int], seed: int, by: str = "random",
                  block: int | None = None) -> dict[str, np.ndarray]:
    """Sorted structure indices of the parts train/val/test, ``sizes`` frames each (up to
    one unit for trajectory and block splits). ``block``: frames per block (default: a
    tenth of the shortest trajectory, at least 1)."""
    n = len(ds)
    rng = np.random.default_rng(seed)
    if block is not None and by != "block":
        raise ValueError(f"--block {block} applies to --by block only (not --by {by})")
    if by == "random":
        order = rng.permutation(n)
        bounds = np.cumsum([0, *sizes])
        return {name: np.sort(order[bounds[k]:bounds[k + 1]]) for k, name in enumerate(PARTS)}
    if by not in ("trajectory", "block"):
        raise ValueError(f"split by {by!r} is not known: allowed random, trajectory, block")
    ids = trajectory_ids(ds)
    if ids is None or (ids == "").any():
        missing = n if ids is None else int((ids == "").sum())
        raise ValueError(
            f"{ds.path}: {missing} of {n} structures record no trajectory (md_trajectory or "
            f"md_run + md_temperature, written by `tfn-md data sample`); split --by {by} "
            "needs them (use --by random for other data)")
    names, traj = np.unique(ids, return_inverse=True)
    if by == "trajectory":
        if len(names) < sum(1 for s in sizes if s > 0):
            raise ValueError(
                f"{ds.path}: {len(names)} trajectories cannot fill {sum(s > 0 for s in sizes)} "
                "non-empty parts by trajectory; sample more trajectories or split --by block")
        units = traj
    else:
        t_order = frame_order(ds)
        lengths = np.bincount(traj)
        if block is None:
            block = max(1, int(lengths.min()) // 10)
        if block < 1:
            raise ValueError(f"--block {block} is not allowed: an integer >= 1")
        units = np.empty(n, dtype=np.int64)
        next_unit = 0
        for t in range(len(names)):
            rows = np.flatnonzero(traj == t)
            rows = rows[np.argsort(t_order[rows], kind="stable")]
            units[rows] = next_unit + np.arange(rows.size) // block
            next_unit += -(-rows.size // block)
    unit_sizes = np.bincount(units)
    part = assign_units(unit_sizes, sizes, rng)
    for k, name in enumerate(PARTS):
        if sizes[k] > 0 and not (part == k).any():
            what = "trajectory" if by == "trajectory" else f"block of {block} frames"
            raise ValueError(
                f"{ds.path}: the {name} part ({sizes[k]} frames asked) gets no whole {what} "
                f"({len(unit_sizes)} units of {unit_sizes.min()}..{unit_sizes.max()} frames); "
                "ask for a larger part" + (", or split --by block" if by == "trajectory"
                                           else " or smaller --block"))
    return {name: np.flatnonzero(part[units] == k) for k, name in enumerate(PARTS)}
