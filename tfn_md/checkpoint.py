"""Checkpoints: one file, readable with ``torch.load(weights_only=True)``.

Layout (a plain dict; no pickled code):

    {"format": "tfn_md-potential", "format_version": 1, "tfn_md_version": str,
     "model": "TFN", "config": JSON string of TFNConfig, "dtype": "float32"|"float64",
     "state_dict": {name: tensor}, "extra": {...}}

Shipped potentials are found by name in the repository's ``potentials/``
folder (source checkout) or the installed package's ``tfn_md/potentials``.
"""

import io
import json
import os
from pathlib import Path

import torch

from .atomic import atomic_path
from .model import TFN
from .version import __version__

__all__ = [
    "CheckpointError",
    "load_potential",
    "model_from_checkpoint",
    "read_checkpoint",
    "resolve_potential",
    "save_potential",
]

FORMAT = "tfn_md-potential"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The file is not a usable tfn_md checkpoint; the message says why."""


def potential_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [here / "potentials", here.parent / "potentials"]


def resolve_potential(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint path, or the name of a shipped potential (``potentials/<name>.pt``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for folder in potential_dirs():
        for candidate in (folder / f"{name_or_path}.pt", folder / str(name_or_path)):
            if candidate.is_file():
                return candidate
    shipped = sorted({p.stem for d in potential_dirs() if d.is_dir() for p in d.glob("*.pt")})
    raise FileNotFoundError(
        f"no checkpoint file or shipped potential named {str(name_or_path)!r} "
        f"(shipped: {shipped or 'none'})"
    )


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def checkpoint_bytes(model: TFN, extra: dict | None = None) -> bytes:
    """The bytes :func:`save_potential` would write."""
    buffer = io.BytesIO()
    torch.save(checkpoint_dict(model, extra), buffer)
    return buffer.getvalue()


def checkpoint_dict(model: TFN, extra: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tfn_md_version": __version__,
        "model": type(model).__name__,
        "config": json.dumps(model.config_dict()),
        "dtype": str(model.e0.dtype).removeprefix("torch."),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }


def save_potential(model: TFN, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write ``model`` (weights + config + versions) atomically to ``path``."""
    atomic_torch_save(checkpoint_dict(model, extra), path)


def read_checkpoint(path: str | os.PathLike | bytes) -> dict:
    """Load and check the checkpoint dict; raise :class:`CheckpointError` naming the problem.
    ``path``: a file, a shipped name, or the bytes of a checkpoint file.

    Checked: the format marker and version, and the entries every checkpoint has
    (``model``, ``config`` a JSON object, ``dtype`` float32/float64, ``state_dict``
    a dict of tensors)."""
    if isinstance(path, bytes):
        source, path = io.BytesIO(path), "checkpoint bytes"
    else:
        source = path = resolve_potential(path)
    try:
        ckpt = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a tfn_md checkpoint (cannot be read: {err})") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tfn_md checkpoint (no '{FORMAT}' marker)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}, newer than this tfn_md "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade tfn_md"
        )
    if ckpt.get("model") != "TFN":
        raise CheckpointError(f"{path}: unknown model class {ckpt.get('model')!r} (allowed: 'TFN')")
    try:
        config = json.loads(ckpt.get("config"))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: entry 'config' is not valid JSON ({err})") from None
    if not isinstance(config, dict) or "species" not in config:
        raise CheckpointError(f"{path}: entry 'config' must be a JSON object with 'species', "
                              f"got {str(ckpt.get('config'))[:80]!r}")
    if ckpt.get("dtype") not in ("float32", "float64"):
        raise CheckpointError(f"{path}: entry 'dtype' is {ckpt.get('dtype')!r}, "
                              "allowed: 'float32' or 'float64'")
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: entry 'state_dict' is missing or not a dict of tensors")
    return ckpt


def model_from_checkpoint(ckpt: dict, path: str | os.PathLike = "checkpoint") -> TFN:
    """The :class:`TFN` of a checked checkpoint dict (see :func:`read_checkpoint`) with its
    weights, in the saved dtype, on the CPU. Raises
    :class:`CheckpointError` when the config does not build a model, the weights do not
    fit it, or a weight is not finite."""
    try:
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten anyway
            model = TFN(**json.loads(ckpt["config"]))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: entry 'config' does not describe a TFN: {err}") from None
    model = model.to(getattr(torch, ckpt["dtype"]))
    state = ckpt["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        message = " ".join(str(err).split())
        raise CheckpointError(f"{path}: weights do not match the config: {message}") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: weight {name!r} holds NaN or infinite values")
    return model


def load_potential(name_or_path: str | os.PathLike, device="cpu") -> TFN:
    """Checkpoint path or shipped name -> :class:`TFN` in its saved dtype, in eval mode."""
    ckpt = read_checkpoint(name_or_path)
    return model_from_checkpoint(ckpt, name_or_path).to(device).eval()
