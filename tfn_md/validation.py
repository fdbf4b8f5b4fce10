"""Argument checks at the public boundaries (``TFN``, ``TFNCalculator``, the trainer).

Each check raises ``ValueError`` (``TypeError`` for a wrong kind of value) whose
message names the argument, the value given and what is allowed, e.g.

    cutoff = 0.0 is not allowed: a finite number > 0 (Angstrom), or None
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_bool",
    "check_calculator_args",
    "check_dtype",
    "check_int",
    "check_real",
    "check_species",
]

#: dtypes a model or calculator may run in (float16/bfloat16 round energies badly)
MODEL_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _fail(name: str, value: Any, allowed: str, error: type[Exception] = ValueError):
    raise error(f"{name} = {value!r} is not allowed: {allowed}")


def check_int(name: str, value: Any, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """An integer (not a bool, not a float such as 2.5) within [minimum, maximum]."""
    bounds = " and ".join(
        b for b in (f">= {minimum}" if minimum is not None else "",
                    f"<= {maximum}" if maximum is not None else "") if b
    )
    allowed = "an integer" + (f" {bounds}" if bounds else "")
    if isinstance(value, bool) or not isinstance(value, Integral):
        _fail(name, value, allowed, TypeError)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        _fail(name, value, allowed)
    return int(value)


def check_real(name: str, value: Any, minimum: float | None = None, *,
               strict: bool = False, unit: str = "", maximum: float | None = None) -> float:
    """A finite real number (not a bool or a string) above ``minimum`` (``strict``: > it)."""
    parts = ["a finite number"]
    if minimum is not None:
        parts.append(f"{'>' if strict else '>='} {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    allowed = " ".join(parts) + (f" ({unit})" if unit else "")
    if isinstance(value, bool) or not isinstance(value, Real):
        _fail(name, value, allowed, TypeError)
    x = float(value)
    if not math.isfinite(x):
        _fail(name, value, allowed)
    if minimum is not None and (x < minimum or (strict and x == minimum)):
        _fail(name, value, allowed)
    if maximum is not None and x > maximum:
        _fail(name, value, allowed)
    return x


def check_bool(name: str, value: Any, allowed: str = "True or False") -> bool:
    if not isinstance(value, (bool, np.bool_)):
        _fail(name, value, allowed, TypeError)
    return bool(value)


def check_species(name: str, species: Any) -> list[str]:
    """A non-empty list of distinct element symbols."""
    from ase.data import atomic_numbers

    if isinstance(species, str) or not hasattr(species, "__iter__"):
        _fail(name, species, "a list of element symbols, e.g. ['H', 'C', 'O']", TypeError)
    species = list(species)
    if not species:
        _fail(name, species, "at least one element symbol")
    unknown = [s for s in species if not isinstance(s, str) or s not in atomic_numbers or s == "X"]
    if unknown:
        _fail(name, species, f"element symbols such as 'H', 'Cu' (unknown: {unknown})")
    repeated = sorted({s for s in species if species.count(s) > 1})
    if repeated:
        _fail(name, species, f"each element once (repeated: {repeated})")
    return species


def check_dtype(name: str, dtype: Any) -> torch.dtype:
    """torch.float32/float64, their names, or the numpy equivalents -> a torch dtype."""
    allowed = "torch.float32 or torch.float64 (or 'float32', 'float64', np.float32, np.float64)"
    if isinstance(dtype, torch.dtype):
        key = str(dtype).removeprefix("torch.")
    elif isinstance(dtype, str):
        key = dtype.removeprefix("torch.")
    else:
        try:
            key = np.dtype(dtype).name
        except TypeError:
            _fail(name, dtype, allowed, TypeError)
    if key not in MODEL_DTYPES:
        _fail(name, dtype, allowed)
    return MODEL_DTYPES[key]


def check_device(name: str, device: Any) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        _fail(name, device, "a torch device such as 'cpu', 'cuda', 'cuda:1'")


def check_calculator_args(potential: Any, device: Any, dtype: Any, skin: Any, compile: Any,
                          exact: Any = False) -> tuple[torch.device, torch.dtype | None, float]:
    """Checked (device, dtype or None, skin) of ``TFNCalculator``; the model is checked
    by ``load_potential`` or was built by ``TFN``."""
    from .model import TFN

    if not isinstance(potential, (TFN, str, os.PathLike)):
        _fail("potential", potential, "a checkpoint path, a shipped potential name or a TFN "
              "model", TypeError)
    checked_device = check_device("device", device)
    checked_dtype = None if dtype is None else check_dtype("dtype", dtype)
    checked_skin = check_real("skin", skin, 0.0, unit="Angstrom")
    if not (compile == "auto" and isinstance(compile, str)):
        check_bool("compile", compile, "True, False or 'auto'")
    check_bool("exact", exact)
    return checked_device, checked_dtype, checked_skin
