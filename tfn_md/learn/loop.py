"""The active-learning loop of ``tfn-md learn``.

    test      independent reference Langevin MD, seeds the loop never trains on: [test]
              trajectories per temperature -> test.h5; and a fixed validation set, n / 10
              frames per [initial] temperature with another seed -> valid.h5
    initial   reference Langevin MD at [initial] temperatures -> data.h5; where `stretch`
              or `hop` list factors, for a molecule also free atoms, stretched bonds and
              hopping hydrogens (tfn_md.learn.dissociation)
    repeat, iteration i = 0, 1, ...:
      train   iteration 0 from scratch (or run.init), later from iteration i-1's weights, on
              data.h5; then the heads' force spread is calibrated on training frames
              (:func:`tfn_md.train.uncertainty.calibrate_heads`) -> iter<i>/model.pt
              and the energy uncertainty (:func:`tfn_md.train.uncertainty.calibrate_llpr`,
              on the training's held-out frames, which also set its threshold)
      explore Langevin MD driven by the potential at [explore] temperatures, from each
              starting structure; every `interval` steps the per-atom force spread of its
              energy heads and the energy uncertainty (:mod:`tfn_md.inference.uncertainty`)
              are computed; a frame is a candidate where its force spread (RMS over atoms,
              or the largest, `statistic`) exceeds `threshold`, its energy uncertainty
              `energy_threshold`, two atoms not bonded in the starting structure come
              closer than `contact` or than `new_bond` x the sum of their covalent radii
              (a bond formed), or a bond of it is longer than `bond` x that sum (a
              trajectory ends past `stop`, at a contact, a new bond or a broken bond)
      select  candidates by decreasing score (the largest of force spread / threshold and
              energy uncertainty / energy threshold; contacts first, then new bonds, then
              broken bonds),
              none within
              `min_separation` steps of one already selected on the same trajectory, at
              most `max_select` and the labels left in the budget
      label   each selected frame by the reference, appended to data.h5 as it is done
    until an exploration finds no candidate (converged), or the label budget or the
    iteration limit is spent (then one last training on all labels), or the next
    iteration and the check after it would overrun [budget] minutes (estimated from the
    iterations so far).
    check     where it did not converge: the final potential explored as above, nothing
              labelled: how far from converged it stopped, which holes it still has
              (contacts, new or broken bonds) in report.md; skipped where it would overrun
              the budget
    card      a molecule's final potential against the reference: geometry, frequencies,
              torsions, bonds stretched out to dissociation, hydrogen hops (seconds;
              tfn_md.check)

Every training is validated on valid.h5 (fixed: iterations compare) and scored on each
trajectory of test.h5: force MAE (meV/A), energy MAE (meV/atom) and the mean energy offset
<E_model - E_ref> / N (meV/atom), whose change between iterations shows a drift of the
energy zero. Retrainings start from the last weights at ``optim.retrain_lr`` with a short
cosine (``retrain_epochs``). One progress line per stage: the iteration, the stage, the
time spent and an estimate of the time left.

Everything lives in [run] out: ``test.h5``, ``valid.h5``, ``state.json`` (stage and
history, written atomically after each stage), ``data.h5`` (all labels; every append is
committed atomically, see docs/dataset-format.md), ``iter<i>/train`` (a ``tfn-md train``
run: best.pt, last.pt, metrics), ``iter<i>/candidates.h5`` and ``iter<i>/selected.h5``
(written atomically before labelling starts), ``final.pt``, ``report.md``,
``report.png`` and, for a molecule, ``card/`` (the final potential's report card against
the reference, :meth:`Learner.report_card`).

Resuming (run the same command again after a crash or ``kill -9``): the stage in
``state.json`` is redone from where it stands. The initial sampling continues after its
last stored frame (:func:`tfn_md.data.sources.sample_xtb`); training continues from its
``last.pt``; exploration is rerun (it calls no reference); labelling skips the selected
frames already in data.h5 (each labelled frame carries ``al_iteration`` and ``al_index``),
so no label is lost or stored twice, and only a label whose computation was cut short is
computed again.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from ..atomic import atomic_path, write_text_atomic
from ..data.reader import H5Dataset
from ..data.sources import (
    MD_FRAME,
    MD_RUN,
    MD_TEMPERATURE,
    MD_TRAJECTORY,
    _rng,
    _thermalize,
    molecule_or_file,
    sample_xtb,
    trajectory_id,
)
from ..data.writer import DatasetWriter, write_atoms
from .config import LearnConfig
from .fields import (
    AL_BOND,
    AL_BROKEN,
    AL_CONTACT,
    AL_DISSOCIATION,
    AL_ENERGY_SPREAD,
    AL_INDEX,
    AL_ITERATION,
    AL_NEW_BOND,
    AL_SCORE,
    AL_SPREAD,
    AL_STRETCH,
    BOOKKEEPING,
)
from .reference import label, reference_factory

__all__ = ["Learner", "broken_bond", "close_contact", "new_bond", "select"]


def _duration(seconds: float) -> str:
    """Seconds as "42 s" below 10 minutes, else "12.5 min"."""
    return f"{seconds:.0f} s" if seconds < 600 else f"{seconds / 60:.1f} min"


def bonded_pairs(atoms: Atoms) -> set[tuple[int, int]]:
    """The pairs i < j of ``atoms`` that are bonded: closer than 1.3 times the sum of their
    covalent radii (ASE's natural cutoffs; :func:`tfn_md.bonds.bonds`)."""
    from ..bonds import bonds

    return set(bonds(atoms))


def _unbonded(atoms: Atoms, bonded: set[tuple[int, int]], cutoff) -> tuple:
    """(i, j, d) of the pairs within ``cutoff`` (ASE's neighbor_list: a distance, or one
    radius per atom) that are not a pair of ``bonded``, periodic images included."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, cutoff)
    keep = np.array([(min(a, b), max(a, b)) not in bonded for a, b in zip(i, j, strict=True)],
                    dtype=bool)
    return i[keep], j[keep], d[keep]


def close_contact(atoms: Atoms, bonded: set[tuple[int, int]], distance: float) -> float | None:
    """The shortest distance (A) between two atoms closer than ``distance`` that are not a
    pair of ``bonded``, or None where there is none (periodic images included)."""
    d = _unbonded(atoms, bonded, distance)[2]
    return float(d.min()) if len(d) else None


def new_bond(atoms: Atoms, bonded: set[tuple[int, int]], factor: float) -> float | None:
    """The smallest distance / (r_i + r_j) (covalent radii) of two atoms that are not a
    pair of ``bonded``, where it is below ``factor``; else None (periodic images
    included). Below ~1.1 the two have formed a bond that the starting structure lacks
    (a ring closing, an atom moving to another partner): at the start such pairs sit at
    1.5 or more, and thermal motion of bonded neighbours' neighbours stays above ~1.4."""
    from ase.data import covalent_radii

    radii = covalent_radii[atoms.numbers]
    i, j, d = _unbonded(atoms, bonded, factor * radii)  # pairs within factor (r_i + r_j)
    return float((d / (radii[i] + radii[j])).min()) if len(d) else None


def broken_bond(atoms: Atoms, bonded: set[tuple[int, int]], factor: float) -> float | None:
    """The longest of the ``bonded`` pairs in units of the sum of their covalent radii,
    where it exceeds ``factor``; else None (periodic cells: the nearest image)."""
    from ase.data import covalent_radii
    from ase.geometry import find_mic

    if not bonded:
        return None
    i, j = np.array(sorted(bonded)).T
    vec = atoms.positions[j] - atoms.positions[i]  # one array operation per check, not a
    if atoms.pbc.any():  # Python loop over the bonds (it runs every explore.interval)
        vec = find_mic(vec, atoms.cell, atoms.pbc)[0]
    radii = covalent_radii[atoms.numbers[i]] + covalent_radii[atoms.numbers[j]]
    ratio = float(np.max(np.linalg.norm(vec, axis=1) / radii))
    return ratio if ratio > factor else None


def select(spreads: np.ndarray, trajectories: np.ndarray, steps: np.ndarray, limit: int,
           min_separation: int) -> list[int]:
    """Indices of the chosen candidates: by decreasing spread, skipping any within
    ``min_separation`` steps of a chosen one on the same trajectory, at most ``limit``."""
    chosen: list[int] = []
    for k in np.argsort(-np.asarray(spreads), kind="stable"):
        if len(chosen) >= limit:
            break
        if any(trajectories[c] == trajectories[k] and abs(int(steps[c]) - int(steps[k]))
               < min_separation for c in chosen):
            continue
        chosen.append(int(k))
    return chosen


class Learner:
    """Runs (or resumes) the loop of one configuration; :meth:`run` returns the final state."""

    def __init__(self, cfg: LearnConfig, progress: bool = True):
        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.run.out)
        self.data = self.out / "data.h5"
        self.state_path = self.out / "state.json"
        r = cfg.reference
        self.method = r.method or r.calculator
        self.make = reference_factory(r.method, r.calculator, r.kwargs)
        files = cfg.system.structure
        files = files if isinstance(files, list) else [files] if files else [None]
        self.starts = [molecule_or_file(cfg.system.molecule or None, f) for f in files]

    # -- state -----------------------------------------------------------------------
    def load_state(self) -> dict:
        if self.state_path.exists():
            return json.loads(self.state_path.read_text())
        return {"iteration": 0, "stage": "test", "final": False, "history": [],
                "seconds": 0.0}

    def save_state(self, state: dict) -> None:
        write_text_atomic(self.state_path, json.dumps(state, indent=1) + "\n")

    def _say(self, text: str) -> None:
        if self.progress:
            print(f"[learn] {text}", file=sys.stderr, flush=True)

    def _entry(self, state: dict, i: int) -> dict:
        while len(state["history"]) <= i:
            state["history"].append({"iteration": len(state["history"])})
        return state["history"][i]

    def labels_so_far(self) -> int:
        """Labels added by the loop (frames with ``al_iteration``), not the initial ones."""
        if not self.data.exists():
            return 0
        with H5Dataset(self.data) as ds:
            return int(ds.mask(AL_ITERATION).sum()) if AL_ITERATION in ds.fields else 0

    # -- the loop --------------------------------------------------------------------
    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        config_json = json.dumps(self.cfg.to_dict(), indent=1, default=str) + "\n"
        self._check_same_run(json.loads(config_json))
        write_text_atomic(self.out / "config.json", config_json)
        state = self.load_state()
        clock, spent = time.monotonic(), float(state.get("seconds", 0.0))

        def elapsed() -> float:
            return spent + time.monotonic() - clock

        while state["stage"] != "done":
            i, stage = state["iteration"], state["stage"]
            self._progress(state, elapsed())
            started = time.monotonic()
            if stage == "test":
                self.independent()
                state["stage"] = "initial"
            elif stage == "initial":
                self.initial()
                state["stage"] = "train"
            elif stage == "train":
                self._entry(state, i).update(self.train(i))
                self._spent(state, i, stage, started)  # counted in the budget check below
                state["stage"] = "check" if state["final"] else "explore"
                if not state["final"] and self._over_budget(state, elapsed()):
                    state["stage"], state["budget_stop"] = "check", True
            elif stage == "check":  # the final potential explored, nothing labelled
                explore = self._explore_seconds(state)
                budget = 60.0 * self.cfg.budget.minutes
                if budget and explore is not None and elapsed() + explore > budget:
                    self._entry(state, i)["check"] = "skipped: past the time budget"
                else:
                    self._entry(state, i).update(self.explore(i), check="done")
                state["stage"] = "done"
            elif stage == "explore":
                found = self.explore(i)
                self._entry(state, i).update(found)
                if found["candidates"] == 0:
                    state["stage"], state["converged"] = "done", True
                elif found["selected"] == 0:  # budget spent before this iteration
                    state["stage"] = "done"
                else:
                    state["stage"] = "label"
            elif stage == "label":
                self._entry(state, i)["labelled"] = self.label(i)
                used = self.labels_so_far()
                state["iteration"] = i + 1
                state["stage"] = "train"
                state["final"] = (used >= self.cfg.budget.max_labels
                                  or i + 1 >= self.cfg.budget.max_iterations)
            if stage in ("explore", "label", "check"):
                self._spent(state, i, "explore" if stage == "check" else stage, started)
            state["seconds"] = elapsed()
            self.save_state(state)
        self._progress(state, elapsed())
        final = self.model_path(state["iteration"])
        with atomic_path(self.out / "final.pt") as tmp:
            shutil.copyfile(final, tmp)
        self.report_card()
        from .report import write_report

        write_report(self, state)
        return state

    def report_card(self) -> None:
        """The final potential's physics report card against the reference
        (:func:`tfn_md.check.molecule.compare_molecule`: geometry, frequencies, torsion
        barriers, bond stretches out to dissociation, hydrogen hops) for the first
        molecular start, into ``card/`` (report.md, properties.json, scans.png). Crystals
        get none here (``tfn-md check --crystal`` needs a cubic element). A failure is
        written there in its place: the loop's result stands."""
        atoms = next((a for a, _ in self.starts if not a.pbc.any()), None)
        if atoms is None:
            return
        from ..ase.calculator import TFNCalculator
        from ..check.molecule import compare_molecule, describe
        from ..check.report import card_text, write_card
        from ..checkpoint import load_potential

        folder, names = self.out / "card", ("final.pt", self.method)
        self._say(f"report card: final.pt against {self.method} -> {folder}")
        model = load_potential(self.out / "final.pt")
        try:
            potential, reference, scans, summary = compare_molecule(
                lambda: TFNCalculator(model, dtype="float64", compile=False),
                lambda: self.make(self.method), atoms)
        except Exception as err:  # noqa: BLE001 - any calculator's failure, said in report.md
            folder.mkdir(exist_ok=True)
            write_text_atomic(folder / "report.md", f"The report card failed: {err!r}\n")
            return
        write_card(folder, card_text(potential, reference, describe, names, summary),
                   potential, reference, scans, names)

    def _spent(self, state: dict, i: int, stage: str, started: float) -> None:
        """Add the wall time since ``started`` to iteration i's seconds of ``stage``."""
        seconds = self._entry(state, i).setdefault("seconds", {})
        seconds[stage] = seconds.get(stage, 0.0) + time.monotonic() - started

    def _check_same_run(self, now: dict) -> None:
        """Resuming: the folder's run must have the same configuration, [budget] aside
        (it may be extended); sections and keys an older version did not write are not
        compared."""
        path = self.out / "config.json"
        if not (self.state_path.exists() and path.exists()):
            return
        before = json.loads(path.read_text())
        changed = [f"{name}.{key}" for name, section in now.items()
                   if name != "budget" and isinstance(section, dict) and name in before
                   for key in sorted(set(section) | set(before[name]))
                   if key in before[name] and section.get(key) != before[name].get(key)]
        if changed:
            raise ValueError(f"{self.out} holds a run of another configuration "
                             f"({', '.join(changed)} differ): run it again as it was, or "
                             "give another output folder")

    # -- time ------------------------------------------------------------------------
    def iteration_seconds(self, state: dict) -> float | None:
        """The mean wall time of one iteration (explore, label, retrain) so far, s; None
        before the first has finished."""
        history = state["history"]
        done = [history[k]["seconds"].get("explore", 0.0) + history[k]["seconds"].get(
                "label", 0.0) + history[k + 1]["seconds"].get("train", 0.0)
                for k in range(len(history) - 1)
                if "seconds" in history[k] and "seconds" in history[k + 1]
                and "train" in history[k + 1]["seconds"]]
        return float(np.mean(done)) if done else None

    def time_left(self, state: dict, elapsed: float) -> float | None:
        """Estimated seconds to the end: the iterations left at the mean iteration time so
        far, less what the current one has spent (at the final check: one exploration);
        at most what is left of the budget."""
        budget = 60.0 * self.cfg.budget.minutes or None
        if state["stage"] == "done":
            return 0.0
        per = self.iteration_seconds(state)
        left = None
        if state["stage"] == "check":
            left = self._explore_seconds(state)
        elif per is not None:
            i = state["iteration"]
            entry = state["history"][i] if i < len(state["history"]) else {}
            current = sum(entry.get("seconds", {}).get(k, 0.0)
                          for k in ("explore", "label") if state["stage"] != "train")
            iterations = self.cfg.budget.max_iterations - i
            left = max(iterations * per - current, 0.0)
        if budget is not None:
            left = budget - elapsed if left is None else min(left, budget - elapsed)
            left = max(left, 0.0)
        return left

    @staticmethod
    def _explore_seconds(state: dict) -> float | None:
        """The mean wall time of one exploration so far, s; None before the first."""
        done = [e["seconds"]["explore"] for e in state["history"]
                if "explore" in e.get("seconds", {})]
        return float(np.mean(done)) if done else None

    def _over_budget(self, state: dict, elapsed: float) -> bool:
        """True where [budget] minutes is set and one more iteration and the final
        potential's exploration after it, at the mean times so far, would end past it."""
        if not self.cfg.budget.minutes:
            return False
        per = self.iteration_seconds(state)
        check = self._explore_seconds(state) or 0.0
        return per is not None and elapsed + per + check > 60.0 * self.cfg.budget.minutes

    def _progress(self, state: dict, elapsed: float) -> None:
        """The overall progress line: iteration, stage, time spent, time left (minutes)."""
        left = self.time_left(state, elapsed)
        text = (f"iteration {state['iteration']} (at most {self.cfg.budget.max_iterations})"
                f" | {state['stage']} | {_duration(elapsed)} spent | "
                + ("time left unknown until an iteration has finished" if left is None
                   else f"~{_duration(left)} left"))
        self._say(text)

    # -- stages ----------------------------------------------------------------------
    @property
    def test_path(self) -> Path:
        return self.out / "test.h5"

    @property
    def valid_path(self) -> Path:
        return self.out / "valid.h5"

    def independent(self) -> None:
        """test.h5: [test] trajectories per temperature and starting structure, seeds
        run.seed + 10000 + k (never trained on); valid.h5: n / 10 frames per [initial]
        temperature with seed run.seed + 20000 (the fixed validation set). Both resume
        where they stand, as the initial sampling does."""
        t, c, seed = self.cfg.test, self.cfg.initial, self.cfg.run.seed
        jobs = [(self.test_path, start, t.temperatures, t.n, t.interval, t.equilibration,
                 seed + 10000 + k) for start in self.starts for k in range(t.trajectories)]
        n_valid = max(c.n // 10, 2) if c.n else 0
        jobs += [(self.valid_path, start, c.temperatures, n_valid, c.interval,
                  c.equilibration, seed + 20000) for start in self.starts if n_valid]
        if not jobs:
            return
        from tqdm import tqdm

        total = sum(len(temps) * n for _, _, temps, n, *_ in jobs)
        self._say(f"independent test and validation data: {total} frames with {self.method}")
        with tqdm(total=total, desc="test+valid", unit="frame", disable=not self.progress,
                  file=sys.stderr) as bar:
            for path, (atoms, name), temps, n, interval, equilibration, s in jobs:
                sample_xtb(path, atoms, name=name, temperatures=temps, n=n,
                           method=self.method, interval=interval, timestep=c.timestep,
                           friction=c.friction, equilibration=equilibration, seed=s,
                           progress=bar.update, calculator=self.make)

    def test_errors(self, model_path: Path) -> dict:
        """Errors of a model on each trajectory of test.h5 (meV/A, meV/atom): per
        temperature the worst trajectory's force MAE, and over all frames the force and
        energy MAE and the mean energy offset <E_model - E_ref> / N."""
        from ..ase.calculator import TFNCalculator

        calc = TFNCalculator(str(model_path), dtype=self.cfg.run.dtype, compile=False)
        per_traj: dict = {}
        with H5Dataset(self.test_path) as ds:
            for atoms in ds:
                ref_e, ref_f = atoms.get_potential_energy(), atoms.get_forces()
                atoms.calc = calc
                key = (float(atoms.info[MD_TEMPERATURE]), str(atoms.info[MD_TRAJECTORY]))
                rows = per_traj.setdefault(key, [])
                rows.append((np.abs(atoms.get_forces() - ref_f).mean(),
                             (atoms.get_potential_energy() - ref_e) / len(atoms)))
        worst: dict = {}
        for (temperature, _), rows in per_traj.items():
            mae = 1000 * float(np.mean([f for f, _ in rows]))
            worst[f"{temperature:g}"] = max(worst.get(f"{temperature:g}", 0.0), mae)
        rows = [r for v in per_traj.values() for r in v]
        return {"trajectories": len(per_traj), "frames": len(rows),
                "worst_forces_mae_meV_per_A": worst,
                "forces_mae_meV_per_A": 1000 * float(np.mean([f for f, _ in rows])),
                "energy_mae_meV_per_atom": 1000 * float(np.mean([abs(e) for _, e in rows])),
                "energy_offset_meV_per_atom": 1000 * float(np.mean([e for _, e in rows]))}

    def initial(self) -> None:
        c = self.cfg.initial
        if c.data and not self.data.exists():  # the whole copy appears at once, or nothing
            # without an earlier loop's bookkeeping: its frames are this loop's initial
            # data, not labels of this loop's iterations (budget, resume, report)
            files = c.data if isinstance(c.data, list) else [c.data]
            sources = [H5Dataset(f) for f in files]
            try:
                extra = {f.name: f for source in sources for f in source.fields.values()
                         if f.optional and f.name not in BOOKKEEPING}
                with atomic_path(self.data) as tmp:
                    with DatasetWriter(tmp, append=False, fields=list(extra.values())) as writer:
                        for f, source in zip(files, sources, strict=True):
                            self._say(f"initial data: copying {len(source)} frames from {f}")
                            writer.extend_arrays(
                                {k: v for k, v in source.get_arrays(i).items()
                                 if k not in BOOKKEEPING} for i in range(len(source)))
            finally:
                for source in sources:
                    source.close()
        if c.n:
            self._sample_initial()
        if c.stretch or c.hop:
            self.dissociation()

    def _sample_initial(self) -> None:
        c = self.cfg.initial
        total = c.n * len(c.temperatures)
        self._say(f"initial sampling: {total} frames with {self.method}")
        from tqdm import tqdm

        with tqdm(total=total * len(self.starts), desc="initial", unit="frame",
                  disable=not self.progress, file=sys.stderr) as bar:
            for atoms, name in self.starts:
                sample_xtb(self.data, atoms, name=name, temperatures=c.temperatures,
                           n=c.n, method=self.method, interval=c.interval, timestep=c.timestep,
                           friction=c.friction, equilibration=c.equilibration,
                           seed=self.cfg.run.seed, progress=bar.update, calculator=self.make)

    def dissociation(self) -> None:
        """Free atoms, stretched bonds and hopping hydrogens (:mod:`tfn_md.learn.dissociation`) of
        each molecular start, made from the initial frames in data.h5 and labelled into
        it; resuming labels those not yet there. A frame the reference fails on (an SCF
        that does not converge far out on a dissociation curve) is left out, and said."""
        from tqdm import tqdm

        from .dissociation import free_atoms, hopped_hydrogens, stretched_bonds

        c = self.cfg.initial
        marked = self._marked(AL_DISSOCIATION)
        with H5Dataset(self.data) as ds:
            done = set(ds.column(AL_DISSOCIATION)[marked].tolist()) if marked.any() else set()
            initial = [ds[k] for k in range(len(ds)) if not marked[k]]
        frames: list[Atoms] = []
        for start, _ in self.starts:
            if start.pbc.any():
                continue
            same = [a for a in initial if list(a.numbers) == list(start.numbers)]
            bonded = bonded_pairs(start)
            frames += (free_atoms(start.numbers)
                       + stretched_bonds(same, bonded, c.stretch, c.stretch_frames)
                       + hopped_hydrogens(same, bonded, c.hop, c.stretch_frames))
        if not frames:
            return
        todo = [(k, a) for k, a in enumerate(frames) if k not in done]
        self._say(f"dissociation: {len(frames)} free-atom, stretched-bond and hydrogen-hop "
                  f"frames, labelling {len(todo)} with {self.method}")
        failed = []
        with (DatasetWriter(self.data) as writer,
              tqdm(total=len(frames), initial=len(frames) - len(todo), desc="dissociation",
                   unit="frame", disable=not self.progress, file=sys.stderr) as bar):
            for k, atoms in todo:
                atoms.info[AL_DISSOCIATION] = k
                try:
                    record = label(atoms, self.make, self.method)
                    if AL_STRETCH in atoms.info:  # the energy only (module docstring)
                        energy = record.get_potential_energy()
                        record.calc = SinglePointCalculator(record, energy=energy)
                    writer.append(record)
                except Exception as err:  # noqa: BLE001 - any reference failure
                    failed.append(f"{atoms.info.get(AL_BOND, 'free atom')} x "
                                  f"{atoms.info.get(AL_STRETCH, '-')}: {err}")
                bar.update(1)
        if failed:
            self._say(f"dissociation: the reference failed on {len(failed)} frames, left "
                      "out: " + "; ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""))

    def model_path(self, i: int) -> Path:
        """The model of iteration i: the training's best.pt with calibrated heads."""
        return self.out / f"iter{i}" / "model.pt"

    def train(self, i: int) -> dict:
        from ..train.config import TrainConfig
        from ..train.trainer import Trainer

        out = self.out / f"iter{i}" / "train"
        init = self.cfg.run.init if i == 0 else str(self.model_path(i - 1))
        valid = self.valid_path if self.valid_path.exists() else None
        raw = self.cfg.train_dict(self.data, out, init, first=i == 0, valid=valid)
        with H5Dataset(self.data) as ds:
            n_data = len(ds)
        self._say(f"iteration {i}: training on {n_data} labelled frames"
                  + (f" from {init}" if init else ""))
        trainer = Trainer(TrainConfig.from_dict(raw), resume=True, progress=self.progress)
        split = (trainer.train_set.indices, valid or self.data, trainer.valid_set.indices)
        try:
            result = trainer.fit()
        finally:  # data.h5 is appended to later in this process: drop every read handle
            for dataset in (trainer.train_set, trainer.valid_set):
                dataset.h5.close()
            del trainer
            gc.collect()
        entry = {"n_data": n_data, "valid_forces_mae": result.get("valid_forces_mae"),
                 "valid_energy_per_atom_mae": result.get("valid_energy_per_atom_mae")}
        entry["calibration"] = self.calibrate(i, out / "best.pt", *split)
        zero = entry["calibration"]["energy_zero"]
        self._say(f"iteration {i}: energy zero re-fitted on {zero['structures']} training "
                  "frames that no exploration selected: mean offset "
                  f"{zero['offset_before_meV_per_atom']:+.2f} -> "
                  f"{zero['offset_after_meV_per_atom']:+.2f} meV/atom")
        if self.test_path.exists():
            entry["independent"] = self.test_errors(self.model_path(i))
            self._say(f"iteration {i}: on the independent trajectories " + ", ".join(
                f"worst force MAE {v:.1f} meV/A at {t} K" for t, v in
                entry["independent"]["worst_forces_mae_meV_per_A"].items())
                + f"; energy offset {entry['independent']['energy_offset_meV_per_atom']:+.2f}"
                " meV/atom")
        if self.cfg.run.test:
            entry["test"] = self.score(self.model_path(i), self.cfg.run.test)
        return entry

    def sampled(self, indices) -> list[int]:
        """Those of ``indices`` (frames of data.h5) that no exploration selected and that
        are not stretched bonds: the initial sampling, copied data and free atoms; all of
        them where none is left."""
        marked = self._marked(AL_ITERATION, AL_STRETCH)
        kept = [int(i) for i in indices if not marked[int(i)]]
        return kept or list(indices)

    def _marked(self, *names: str) -> np.ndarray:
        """bool [frames of data.h5]: which carry any of the fields ``names``."""
        with H5Dataset(self.data) as ds:
            marked = np.zeros(len(ds), bool)
            for name in names:
                if name in ds.fields:
                    marked |= ds.mask(name)
        return marked

    def calibrate(self, i: int, best: Path, train_idx, valid_file: Path, valid_idx) -> dict:
        """Fit the heads' force spread to training frames (:func:`calibrate_heads`, the
        mean unchanged) and the energy uncertainty to the held-out ones
        (:func:`calibrate_llpr`), after re-fitting the energy zero E0 to the training frames
        no exploration selected (:func:`refit_energy_zero`: the mean energy offset on the
        distribution the potential is made for, not pulled by the extreme frames that the
        explorations select); write iter<i>/model.pt atomically. The energy threshold
        (``explore.energy_threshold``, or where 0 the 99th percentile of the uncertainty
        on the held-out frames) is returned with the calibration."""
        import torch

        from ..checkpoint import load_potential, save_potential
        from ..data.loader import GraphDataset
        from ..train.energy_zero import refit_energy_zero
        from ..train.uncertainty import calibrate_heads, calibrate_llpr

        model = load_potential(best)
        train = GraphDataset(self.data, model.cutoff, train_idx)
        valid = GraphDataset(valid_file, model.cutoff, valid_idx)
        zero = GraphDataset(self.data, model.cutoff, self.sampled(train_idx))
        try:
            energy_zero = refit_energy_zero(model, zero)
            # frames spread over the whole file, with forces (not the stretched bonds)
            stretched = self._marked(AL_STRETCH)
            with_forces = [k for k, i in enumerate(train_idx) if not stretched[int(i)]]
            stride = max(1, len(with_forces) // 800)
            subset = torch.utils.data.Subset(train, with_forces[::stride])
            with torch.random.fork_rng(devices=[]):
                result = calibrate_heads(model, subset, max_frames=800)
            threshold = None  # no energy flags
            try:
                result["energy"] = calibrate_llpr(model, train, valid)
                threshold = result["energy"]["sigma_p99"]
            except ValueError as err:  # too few held-out frames with energies
                self._say(f"iteration {i}: the energy uncertainty is not calibrated ({err}): "
                          "no energy flags")
        finally:
            for dataset in (train, valid, zero):
                dataset.h5.close()
        result["energy_zero"] = energy_zero
        result["energy_threshold"] = self.cfg.explore.energy_threshold or threshold
        save_potential(model, self.model_path(i))
        return result

    def score(self, model_path: Path, data: str) -> dict:
        import torch

        from ..checkpoint import load_potential
        from ..data.loader import GraphDataset, collate_batch
        from ..train.trainer import evaluate_model

        model = load_potential(model_path)
        model.tabulate()
        loader = torch.utils.data.DataLoader(GraphDataset(data, model.cutoff), batch_size=16,
                                             collate_fn=collate_batch)
        try:
            return evaluate_model(model, loader)
        finally:
            loader.dataset.h5.close()

    def calculator(self, i: int):
        from ..ase.calculator import TFNCalculator

        return TFNCalculator(str(self.model_path(i)), dtype=self.cfg.run.dtype)

    def explore(self, i: int) -> dict:
        """Potential-driven MD; writes iter<i>/candidates.h5 and selected.h5 (atomically)."""
        from ase.md.langevin import Langevin
        from tqdm import tqdm

        from .. import keys

        e, seed = self.cfg.explore, self.cfg.run.seed
        calc = self.calculator(i)
        calibration = self._entry(self.load_state(), i).get("calibration", {})
        # a run made before the energy uncertainty: no energy flags
        energy_threshold = calibration.get("energy_threshold") or math.inf
        candidates: list[Atoms] = []
        checks = stopped = contacts = formations = breaks = 0
        left = self.cfg.budget.max_labels - self.labels_so_far()
        for (start, name), temperature in itertools.product(self.starts, e.temperatures):
            bonded = bonded_pairs(start)
            for r in range(e.runs):
                settings = {"source": name, "method": "tfn_md learn", "seed": seed,
                            "learn_iteration": i, "learn_run": r, "interval": e.interval,
                            "timestep_fs": e.timestep, "friction_per_fs": e.friction}
                run = json.dumps(settings, sort_keys=True)
                traj = trajectory_id(run, temperature)
                atoms = start.copy()
                atoms.info = {}
                _thermalize(atoms, temperature, _rng(seed, temperature, 1000 + i, r))
                atoms.calc = calc
                dyn = Langevin(atoms, timestep=e.timestep * units.fs, temperature_K=temperature,
                               friction=e.friction / units.fs, fixcm=False,
                               rng=_rng(seed, temperature, 2000 + i, r))
                bar = tqdm(total=e.steps, desc=f"explore {temperature:g} K", unit="step",
                           disable=not self.progress, file=sys.stderr, leave=False)
                for frame in range(e.steps // e.interval):
                    dyn.run(e.interval)
                    bar.update(e.interval)
                    spread = calc.get_property(keys.FORCES_SPREAD, atoms)  # [n] eV/A
                    largest = float(np.sqrt(np.mean(spread**2)) if e.statistic == "rms"
                                    else np.max(spread)) if len(spread) else 0.0
                    sigma = float(calc.results[keys.ENERGY_SPREAD])
                    contact = close_contact(atoms, bonded, e.contact) if e.contact else None
                    formed = new_bond(atoms, bonded, e.new_bond) if e.new_bond else None
                    broken = broken_bond(atoms, bonded, e.bond) if e.bond else None
                    checks += 1
                    score = max(largest / e.threshold, sigma / energy_threshold)
                    if contact is not None:  # first, the closest first
                        score = 1e100 / contact
                    elif formed is not None:  # then new bonds, the shortest first
                        score = 1e75 / formed
                    elif broken is not None:  # then, the most stretched first
                        score = 1e50 * broken
                    elif not np.isfinite(score):
                        score = 1e300
                    if score > 1.0:
                        record = atoms.copy()
                        record.calc = None
                        record.info = {MD_RUN: run, MD_TEMPERATURE: float(temperature),
                                       MD_FRAME: frame, MD_TRAJECTORY: traj,
                                       AL_SPREAD: largest if np.isfinite(largest) else 1e300,
                                       AL_ENERGY_SPREAD: sigma if np.isfinite(sigma) else 1e300,
                                       AL_SCORE: score}
                        if contact is not None:
                            record.info[AL_CONTACT] = contact
                        if formed is not None:
                            record.info[AL_NEW_BOND] = formed
                        if broken is not None:
                            record.info[AL_BROKEN] = broken
                        candidates.append(record)
                    if (contact is not None or formed is not None or broken is not None
                            or not np.isfinite(largest) or largest > e.stop):
                        stopped += 1
                        contacts += contact is not None
                        formations += contact is None and formed is not None
                        breaks += contact is None and formed is None and broken is not None
                        break
                bar.close()
        folder = self.out / f"iter{i}"
        folder.mkdir(parents=True, exist_ok=True)
        chosen: list[int] = []
        if candidates:
            spreads = np.array([a.info[AL_SCORE] for a in candidates])
            trajs = np.array([a.info[MD_TRAJECTORY] for a in candidates])
            steps = np.array([a.info[MD_FRAME] * e.interval for a in candidates])
            chosen = select(spreads, trajs, steps, min(e.max_select, max(left, 0)),
                            e.min_separation)
        selected = []
        for k, c in enumerate(chosen):
            a = candidates[c].copy()
            a.info = {**candidates[c].info, AL_ITERATION: i, AL_INDEX: k}
            selected.append(a)
        for name, frames in (("candidates.h5", candidates), ("selected.h5", selected)):
            with atomic_path(folder / name) as tmp:
                write_atoms(tmp, frames, append=False)
        self._say(f"iteration {i}: {checks} frames checked, {len(candidates)} above "
                  f"{e.threshold} eV/A or {energy_threshold:.4g} eV or closer than "
                  f"{e.contact} A or with a new bond (< {e.new_bond} x covalent radii) or a "
                  f"bond past {e.bond} x covalent radii, {stopped} trajectories stopped "
                  f"({contacts} at a contact, {formations} at a new bond, {breaks} at a "
                  f"broken bond), "
                  f"{len(selected)} selected")
        return {"checked": checks, "candidates": len(candidates), "selected": len(selected),
                "stopped": stopped, "contacts": contacts, "new_bonds": formations,
                "broken": breaks}

    def label(self, i: int) -> int:
        """Label iter<i>/selected.h5 into data.h5, skipping frames already there."""
        from tqdm import tqdm

        with H5Dataset(self.out / f"iter{i}" / "selected.h5") as ds:
            selected = list(ds)
        done: set[int] = set()
        with H5Dataset(self.data) as ds:
            if AL_ITERATION in ds.fields:
                mask = ds.mask(AL_ITERATION) & (ds.column(AL_ITERATION) == i)
                done = set(ds.column(AL_INDEX)[mask].tolist())
        todo = [a for a in selected if int(a.info[AL_INDEX]) not in done]
        self._say(f"iteration {i}: labelling {len(todo)} frames with {self.method}"
                  + (f" ({len(done)} already labelled)" if done else ""))
        with (DatasetWriter(self.data) as writer,
              tqdm(total=len(selected), initial=len(done), desc="label", unit="frame",
                   disable=not self.progress, file=sys.stderr) as bar):
            for atoms in todo:
                atoms.calc = None
                writer.append(label(atoms, self.make, self.method))
                bar.update(1)
        return len(selected)
