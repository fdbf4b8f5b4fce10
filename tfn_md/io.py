"""Checkpoints: one file, readable with ``torch.load(weights_only=True)``.

Layout (a plain dict; no pickled code):

    {"format": "tfn_md-potential", "format_version": 1, "tfn_md_version": str,
     "model": "TFN", "config": JSON string of TFNConfig, "dtype": "float32"|"float64",
     "state_dict": {name: tensor}, "extra": {...}}

Shipped potentials are found by name in the repository's ``potentials/``
folder (source checkout) or the installed package's ``tfn_md/potentials``.
"""

import json
import os
import tempfile
from pathlib import Path

import torch

from . import __version__
from .model import TFN

__all__ = ["CheckpointError", "load_potential", "resolve_potential", "save_potential"]

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and check the checkpoint dict; raise :class:`CheckpointError` naming the problem."""
    path = resolve_potential(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
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
    return ckpt


def load_potential(name_or_path: str | os.PathLike, device="cpu") -> TFN:
    """Checkpoint path or shipped name -> :class:`TFN` in its saved dtype, in eval mode."""
    ckpt = read_checkpoint(name_or_path)
    if ckpt.get("model") != "TFN":
        raise CheckpointError(f"unknown model class {ckpt.get('model')!r} in {name_or_path}")
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten anyway
        model = TFN(**json.loads(ckpt["config"]))
    model = model.to(getattr(torch, ckpt["dtype"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()
