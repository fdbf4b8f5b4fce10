"""The report card's table: each property of the potential beside its reference's, with the
error, as Markdown (and the numbers as JSON)."""

import json
import math

__all__ = ["as_json", "card_table", "relative_errors"]


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


def as_json(potential: dict, reference: dict) -> str:
    """Both sets of values and the relative errors, as JSON."""
    return json.dumps({"potential": potential, "reference": reference,
                       "relative_error": relative_errors(potential, reference)}, indent=1)
