"""The report card's table: each property of the potential beside its reference's, with the
error, as Markdown (and the numbers as JSON)."""

import json
import math

__all__ = ["as_json", "card_table", "card_text", "plot_scans", "relative_errors", "write_card"]


def relative_errors(potential: dict, reference: dict) -> dict[str, float]:
    """(potential - reference) / |reference| of every property both have (nan where the
    reference is 0)."""
    return {k: (potential[k] - reference[k]) / abs(reference[k]) if reference[k] else math.nan
            for k in reference if k in potential}


def card_table(potential: dict, reference: dict, describe, names=("potential", "reference")
               ) -> str:
    """A Markdown table: property, unit, reference value, potential value, error in %.
    ``describe(name)`` gives a property's (description, unit)."""
    errors = relative_errors(potential, reference)
    lines = [f"| property | unit | {names[1]} | {names[0]} | error |", "|---|---|---|---|---|"]
    for key, ref in reference.items():
        if key not in potential:
            continue
        what, unit = describe(key)
        lines.append(f"| {what} | {unit} | {ref:.4g} | {potential[key]:.4g} | "
                     f"{100 * errors[key]:+.1f} % |")
    return "\n".join(lines)


def card_text(potential: dict, reference: dict, describe, names=("potential", "reference"),
              summary: str = "") -> str:
    """The table of :func:`card_table` and, where given, the summary line under it."""
    table = card_table(potential, reference, describe, names)
    return table + (f"\n\n{summary}" if summary else "")


def write_card(folder, text: str, potential: dict, reference: dict, scans: dict,
               names=("potential", "reference")) -> bool:
    """``report.md`` (``text``), ``properties.json`` (:func:`as_json`) and, where there are
    scans, ``scans.png`` into ``folder`` (made); each written atomically. False where
    scans.png could not be drawn (matplotlib missing)."""
    from pathlib import Path

    from ..atomic import write_text_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "report.md", text + "\n")
    write_text_atomic(folder / "properties.json", as_json(potential, reference, scans))
    return not scans or plot_scans(scans, folder / "scans.png", names)


def as_json(potential: dict, reference: dict, scans: dict | None = None) -> str:
    """Both sets of values, the relative errors and the ``scans``, as JSON."""
    return json.dumps({"potential": potential, "reference": reference,
                       "relative_error": relative_errors(potential, reference),
                       "scans": scans or {}}, indent=1)


def plot_scans(scans: dict, path, names=("potential", "reference")) -> bool:
    """One panel per scan (name -> ((x, E[, spread]) of the potential, (x, E, ...) of the
    reference)): both energy curves, their difference and (where given) the potential's
    force spread on a second axis; written to ``path``. False where matplotlib
    is missing (nothing written)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from ..atomic import atomic_path

    cols = min(3, len(scans))
    rows = -(-len(scans) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, (mine, theirs)) in zip(axes.flat, scans.items(), strict=False):  # spare panels
        ax.plot(theirs[0], theirs[1], "k-", label=names[1])
        ax.plot(mine[0], mine[1], "C0--", label=names[0])
        ax.plot(mine[0], [a - b for a, b in zip(mine[1], theirs[1], strict=True)], "C3:",
                label="difference")
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("degrees" if name.startswith("torsion") else
                      "H-Y distance / covalent radii" if name.startswith("hop") else
                      "length / minimum's")
        ax.set_ylabel("E - E_min (eV)")
        if len(mine) > 2 and mine[2] is not None:  # the potential's uncertainty
            twin = ax.twinx()
            twin.plot(mine[0], mine[2], "C2-.", label=f"{names[0]} force spread")
            twin.set_ylabel("force spread, RMS over atoms (eV/A)", color="C2", fontsize=8)
            if ax is axes.flat[0]:
                twin.legend(fontsize=8, loc="upper right")
    for ax in list(axes.flat)[len(scans):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True
