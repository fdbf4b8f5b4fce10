"""The report of ``tfn-md learn``: ``report.md`` (a table per iteration) and
``report.png`` (errors and selected frames per iteration; predicted force spread against
the true force error of the frames each iteration selected and then labelled)."""

from __future__ import annotations

import numpy as np

from ..atomic import atomic_path, write_text_atomic
from ..data.reader import H5Dataset
from .fields import AL_INDEX, AL_ITERATION, AL_SPREAD

__all__ = ["selected_errors", "write_report"]


def selected_errors(learner, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) per frame labelled in iteration ``i``: the force spread of model i
    when it selected the frame, and the force error |F_model - F_ref| of model i on it, both
    as RMS over atoms (or the largest atom's, explore.statistic) in eV/A."""
    from ..ase.calculator import TFNCalculator

    rows = []
    with H5Dataset(learner.data) as ds:
        if AL_ITERATION not in ds.fields:
            return np.zeros(0), np.zeros(0)
        mask = ds.mask(AL_ITERATION) & (ds.column(AL_ITERATION) == i)
        order = np.flatnonzero(mask)
        order = order[np.argsort(ds.column(AL_INDEX)[order])]
        rows = [ds[int(k)] for k in order]
    if not rows:
        return np.zeros(0), np.zeros(0)
    calc = TFNCalculator(str(learner.model_path(i)), dtype=learner.cfg.run.dtype, compile=False)
    predicted, true = [], []
    for atoms in rows:
        reference = atoms.get_forces()
        work = atoms.copy()
        work.calc = calc
        error = np.linalg.norm(work.get_forces() - reference, axis=1)
        predicted.append(float(atoms.info[AL_SPREAD]))
        rms = learner.cfg.explore.statistic == "rms"
        true.append(float(np.sqrt(np.mean(error**2)) if rms else error.max()))
    return np.array(predicted), np.array(true)


def write_report(learner, state: dict) -> None:
    history = state["history"]
    header = ("| iteration | labelled frames trained on | valid force MAE (meV/A) | "
              "test force MAE (meV/A) | frames checked | above threshold | selected |")
    system = ", ".join(name for _, name in learner.starts)
    lines = ["# Active learning report", "",
             f"System {system}, reference {learner.method}, output {learner.out}.", "",
             f"Stopped: {_reason(learner, state)}.", "", header, "|---|---|---|---|---|---|---|"]
    pairs = {}
    for entry in history:
        i = entry["iteration"]
        valid = entry.get("valid_forces_mae")
        test = entry.get("test", {}).get("forces_mae")
        lines.append(f"| {i} | {entry.get('n_data', '-')} | "
                     f"{'-' if valid is None else f'{1000 * valid:.2f}'} | "
                     f"{'-' if test is None else f'{1000 * test:.2f}'} | "
                     f"{entry.get('checked', '-')} | {entry.get('candidates', '-')} | "
                     f"{entry.get('selected', '-')} |")
        if entry.get("labelled"):
            pairs[i] = selected_errors(learner, i)
    lines += _check(learner, state)
    lines += _independent_table(history)
    predicted = np.concatenate([p for p, _ in pairs.values()]) if pairs else np.zeros(0)
    true = np.concatenate([t for _, t in pairs.values()]) if pairs else np.zeros(0)
    if len(predicted) > 2:
        from ..train.uncertainty import spearman

        rho = spearman(predicted, true)
        lines += ["", (f"Selected frames: Spearman correlation of the predicted force spread "
                       f"with the true force error ({learner.cfg.explore.statistic} over "
                       f"atoms): {rho:.2f} ({len(predicted)} frames).")]
    lines += ["", "![report](report.png)"] + _card(learner) + [""]
    write_text_atomic(learner.out / "report.md", "\n".join(lines))
    _plot(learner, history, pairs)


def _independent_table(history) -> list[str]:
    """Per iteration: errors on the loop's own independent trajectories (test.h5) and the
    shift of the mean energy offset since the previous iteration."""
    rows = [e for e in history if "independent" in e]
    if not rows:
        return []
    temps = list(rows[0]["independent"]["worst_forces_mae_meV_per_A"])
    first = rows[0]["independent"]
    title = (f"Independent reference trajectories (never trained on; "
             f"{first['trajectories']} trajectories, {first['frames']} frames):")
    lines = ["", title, "",
             "| iteration | " + " | ".join(f"worst force MAE at {t} K (meV/A)" for t in temps)
             + " | force MAE (meV/A) | energy MAE (meV/atom) | energy offset (meV/atom) | "
             "offset shift (meV/atom) |",
             "|---|" + "---|" * (len(temps) + 4)]
    previous = None
    for e in rows:
        ind = e["independent"]
        offset = ind["energy_offset_meV_per_atom"]
        shift = "-" if previous is None else f"{offset - previous:+.2f}"
        previous = offset
        lines.append(f"| {e['iteration']} | " + " | ".join(
            f"{ind['worst_forces_mae_meV_per_A'].get(t, float('nan')):.2f}" for t in temps)
            + f" | {ind['forces_mae_meV_per_A']:.2f} | {ind['energy_mae_meV_per_atom']:.3f}"
            f" | {offset:+.3f} | {shift} |")
    return lines


def _card(learner) -> list[str]:
    """The final potential's report card (:meth:`Learner.report_card`), where there is one."""
    folder = learner.out / "card"
    if not (folder / "report.md").exists():
        return []
    lines = ["", f"## Report card: final.pt against {learner.method}", "",
             "Each property computed the same way with both (each relaxes its own minimum; "
             "tfn_md/check/molecule.py). A bond stretched to 3x sits on the dissociation "
             "plateau, a hydrogen turned to 1.1x on a 1,2-shift's path: a potential far "
             "below the reference there breaks bonds or moves hydrogens too cheaply in hot "
             "MD.", "", (folder / "report.md").read_text().strip()]
    if (folder / "scans.png").exists():
        lines += ["", "![scans](card/scans.png)"]
    return lines


def _check(learner, state) -> list[str]:
    """What the exploration of the final potential found (nothing of it labelled)."""
    entry = state["history"][-1] if state["history"] else {}
    if "check" not in entry:
        return []
    if entry["check"] != "done":
        return ["", f"The final potential was not explored ({entry['check']})."]
    e = learner.cfg.explore
    return ["", (f"The final potential's own exploration (iteration {entry['iteration']}, "
                 f"not labelled): {entry['checked']} frames checked, {entry['candidates']} "
                 f"above {e.threshold} eV/A or the energy threshold; {entry['stopped']} "
                 f"trajectories stopped: {entry['contacts']} at a contact closer than "
                 f"{e.contact} A, {entry.get('new_bonds', 0)} at a new bond, "
                 f"{entry['broken']} at a broken bond (iter{entry['iteration']}/"
                 "candidates.h5 holds the frames). A trajectory stopped there is a hole: do "
                 "not run the potential where it went.")]


def _reason(learner, state) -> str:
    if state.get("budget_stop"):
        return (f"time budget: one more iteration would have ended past "
                f"{learner.cfg.budget.minutes:g} min")
    if state.get("converged"):
        return (f"converged: the exploration of iteration {state['iteration']} found no frame "
                f"above {learner.cfg.explore.threshold} eV/A")
    used = learner.labels_so_far()
    if used >= learner.cfg.budget.max_labels:
        return f"label budget spent ({used} of {learner.cfg.budget.max_labels})"
    return f"iteration limit ({learner.cfg.budget.max_iterations}) reached, {used} labels added"


def _plot(learner, history, pairs) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    it = [e["iteration"] for e in history]
    ax = axes[0]
    for key, label in (("valid_forces_mae", "validation"), ("test", "test"),
                       ("independent", "independent")):
        if key == "independent":
            values = [e[key]["forces_mae_meV_per_A"] / 1000 if key in e else None
                      for e in history]
        else:
            values = [(e["test"]["forces_mae"] if key == "test" and "test" in e
                       else e.get(key)) for e in history]
        pts = [(i, 1000 * v) for i, v in zip(it, values) if v is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", label=f"{label} force MAE")
    ax.set_xlabel("iteration")
    ax.set_ylabel("force MAE (meV/A)")
    twin = ax.twinx()
    twin.bar(it, [e.get("selected", 0) for e in history], alpha=0.3, color="gray",
             label="selected frames")
    twin.set_ylabel("frames selected")
    ax.legend(loc="upper right")
    ax = axes[1]
    for i, (p, t) in pairs.items():
        ax.plot(p, t, ".", label=f"iteration {i}")
    if pairs:
        hi = max(max(p.max(), t.max()) for p, t in pairs.values())
        ax.plot([0, hi], [0, hi], "k--", lw=0.8)
        ax.legend(fontsize=7)
    stat = learner.cfg.explore.statistic
    ax.set_xlabel(f"predicted force spread, {stat} over atoms (eV/A)")
    ax.set_ylabel(f"true force error, {stat} over atoms (eV/A)")
    fig.tight_layout()
    with atomic_path(learner.out / "report.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
