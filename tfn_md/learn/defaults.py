"""The defaults of ``tfn-md learn`` without a configuration file: ``template.toml`` (every
key, commented; ``tfn-md learn --template`` prints it) for molecules, with
``CRYSTAL`` over it for periodic structures.

    tfn-md learn --molecule NAME | --structure FILE... (--method M | --calculator mod:Cls)
                 [-o DIR] [--budget-minutes M]

builds the same dictionary a TOML file gives :meth:`LearnConfig.from_dict`, so the two
paths run the same loop.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

__all__ = ["CRYSTAL", "TEMPLATE", "command_config", "template_text"]

TEMPLATE = Path(__file__).with_name("template.toml")

# periodic structures: no molecule-sized exploration up to bond breaking, fewer frames (a
# crystal frame carries many atoms), stress learned
CRYSTAL: dict = {
    "initial": {"temperatures": [300.0, 600.0, 900.0], "n": 60, "stretch": [], "hop": []},
    "test": {"temperatures": [300.0, 900.0], "trajectories": 3, "n": 20},
    "explore": {"temperatures": [300.0, 900.0, 1300.0], "runs": 1, "steps": 4000,
                "timestep": 2.0, "max_select": 30, "min_separation": 100,
                "new_bond": 0.0, "bond": 0.0},  # neighbours change in a hot crystal
    "budget": {"max_labels": 300},
    "model": {"channels": 32, "radial_hidden": 64, "n_basis": 8},  # cu-emt's size
    "loss": {"forces": 10.0, "stress": 10.0},
}


def template_text() -> str:
    """The commented template: the molecule defaults, every key."""
    return TEMPLATE.read_text()


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def command_config(*, molecule: str | None = None, structures: list[str] | None = None,
                   method: str | None = None, calculator: str | None = None,
                   out: str | None = None, budget_minutes: float | None = None) -> dict:
    """The raw configuration of a ``tfn-md learn`` command line: the template's defaults
    (``CRYSTAL`` over them where the first structure is periodic) with the system, the
    reference, the output folder (default ``learn-<name>``) and the budget given."""
    from ..data.sources import molecule_or_file

    if bool(molecule) == bool(structures):
        raise ValueError("give exactly one of --molecule NAME and --structure FILE...")
    if bool(method) == bool(calculator):
        raise ValueError("give exactly one of --method (e.g. GFN2-xTB) and --calculator "
                         "module:Class")
    raw = tomllib.loads(template_text())
    atoms, name = molecule_or_file(molecule or None, structures[0] if structures else None)
    if atoms.pbc.any():
        raw = _merge(raw, CRYSTAL)
    raw["system"] = ({"molecule": molecule} if molecule else
                     {"structure": structures if len(structures) > 1 else structures[0]})
    raw["reference"] = {"method": method} if method else {"calculator": calculator}
    raw["run"]["out"] = out or f"learn-{Path(name).stem}"
    if budget_minutes is not None:
        raw["budget"]["minutes"] = budget_minutes
    return raw
