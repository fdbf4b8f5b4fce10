"""The paper's four tasks (Thomas et al. 2018): each is data + readout + loss + report on
top of the shared :class:`tfn_md.TFN`. ``TASKS`` maps CLI names to modules with ``run``."""

import importlib

__all__ = ["TASKS", "get_task"]

TASKS = {
    "tetris": "tetris",
    "gravity": "gravity",
    "inertia": "inertia",
    "missing-point": "missing_point",
}


def get_task(name: str):
    return importlib.import_module(f"{__name__}.{TASKS[name]}")
