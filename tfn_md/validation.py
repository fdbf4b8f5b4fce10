"""Argument checks at the public boundaries (``TFN``, the calculator's engine, the trainer).

Each check raises ``ValueError`` (``TypeError`` for a wrong kind of value) whose
message names the argument, the value given and what is allowed, e.g.

    cutoff = 0.0 is not allowed: a finite number > 0 (Angstrom), or None
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_bool",
    "check_device",
    "check_dtype",
    "check_int",
    "check_real",
    "check_species",
    "fail",
]

#: dtypes a model or calculator may run in (float16/bfloat16 round energies badly)
MODEL_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def fail(name: str, value: Any, allowed: str, error: type[Exception] = ValueError):
    """Raise ``error``: "<name> = <value> is not allowed: <allowed>"."""
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
        fail(name, value, allowed, TypeError)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        fail(name, value, allowed)
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
        fail(name, value, allowed, TypeError)
    x = float(value)
    if not math.isfinite(x):
        fail(name, value, allowed)
    if minimum is not None and (x < minimum or (strict and x == minimum)):
        fail(name, value, allowed)
    if maximum is not None and x > maximum:
        fail(name, value, allowed)
    return x


def check_bool(name: str, value: Any, allowed: str = "True or False") -> bool:
    if not isinstance(value, (bool, np.bool_)):
        fail(name, value, allowed, TypeError)
    return bool(value)


def check_species(name: str, species: Any) -> list[str]:
    """A non-empty list of distinct element symbols."""
    from ase.data import atomic_numbers

    if isinstance(species, str) or not hasattr(species, "__iter__"):
        fail(name, species, "a list of element symbols, e.g. ['H', 'C', 'O']", TypeError)
    species = list(species)
    if not species:
        fail(name, species, "at least one element symbol")
    unknown = [s for s in species if not isinstance(s, str) or s not in atomic_numbers or s == "X"]
    if unknown:
        fail(name, species, f"element symbols such as 'H', 'Cu' (unknown: {unknown})")
    repeated = sorted({s for s in species if species.count(s) > 1})
    if repeated:
        fail(name, species, f"each element once (repeated: {repeated})")
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
            fail(name, dtype, allowed, TypeError)
    if key not in MODEL_DTYPES:
        fail(name, dtype, allowed)
    return MODEL_DTYPES[key]


def check_device(name: str, device: Any) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        fail(name, device, "a torch device such as 'cpu', 'cuda', 'cuda:1'")
