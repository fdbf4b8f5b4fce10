"""Training configuration: typed dataclasses read from a small TOML file.

    [data]
    train = "ethanol.h5"          # dataset file (``tfn-md data ...``)
    valid = ""                    # optional; else valid_fraction of train is held out
    valid_fraction = 0.1
    batch_size = 8

    [model]                       # keyword arguments of tfn_md.TFN (species from the data)
    channels = 32
    l_max = 2
    layers = 2
    cutoff = 5.0

    [loss]                        # weights; energy is per atom
    energy = 1.0
    forces = 10.0
    stress = 0.0
    vectors = { dipole = 0.0 }

    [optim]
    lr = 5e-3
    epochs = 100
    schedule = "plateau"          # or "cosine"
    ema_decay = 0.99
    early_stop = 30

    [run]
    out = "runs/ethanol"
    seed = 0
    dtype = "float64"
    device = "cpu"

The resolved configuration is stored inside every checkpoint.
"""

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

__all__ = ["TrainConfig", "load_config"]


@dataclass
class DataSection:
    train: str = ""
    valid: str = ""
    test: str = ""
    valid_fraction: float = 0.1
    batch_size: int = 8
    num_workers: int = 0


@dataclass
class LossSection:
    energy: float = 1.0
    forces: float = 10.0
    stress: float = 0.0
    vectors: dict[str, float] = field(default_factory=dict)


@dataclass
class OptimSection:
    lr: float = 5e-3
    weight_decay: float = 0.0
    epochs: int = 100
    schedule: str = "plateau"
    patience: int = 10
    factor: float = 0.5
    min_lr: float = 1e-5
    ema_decay: float = 0.99
    early_stop: int = 30
    grad_clip: float = 10.0


@dataclass
class RunSection:
    out: str = "runs/tfn"
    seed: int = 0
    dtype: str = "float64"
    device: str = "cpu"
    plots: bool = True


@dataclass
class TrainConfig:
    data: DataSection = field(default_factory=DataSection)
    model: dict = field(default_factory=dict)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, base_dir: Path | None = None) -> "TrainConfig":
        sections = {f.name: f for f in fields(cls)}
        unknown = set(raw) - set(sections)
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}; known: {sorted(sections)}")
        kwargs = {}
        for name, f in sections.items():
            value = raw.get(name, {})
            if name == "model":
                kwargs[name] = dict(value)
                continue
            section_type = f.default_factory().__class__
            known = {x.name for x in fields(section_type)}
            bad = set(value) - known
            if bad:
                raise ValueError(f"unknown keys {sorted(bad)} in [{name}]; known: {sorted(known)}")
            kwargs[name] = section_type(**value)
        cfg = cls(**kwargs)
        if base_dir is not None:  # paths in a config file are relative to it
            for key in ("train", "valid", "test"):
                value = getattr(cfg.data, key)
                if value and not Path(value).is_absolute():
                    setattr(cfg.data, key, str(base_dir / value))
        if cfg.optim.schedule not in ("plateau", "cosine"):
            raise ValueError(f"optim.schedule must be 'plateau' or 'cosine', not {cfg.optim.schedule!r}")
        if cfg.run.dtype not in ("float32", "float64"):
            raise ValueError(f"run.dtype must be 'float32' or 'float64', not {cfg.run.dtype!r}")
        return cfg


def load_config(path) -> TrainConfig:
    path = Path(path)
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    return TrainConfig.from_dict(raw, base_dir=path.parent)
