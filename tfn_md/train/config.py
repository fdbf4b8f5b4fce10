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
    vectors = { dipole = 0.0 }    # a potential with a dipole head (model.dipole) fits its
                                  # dipole sum_i q_i r_i + v_i; else the sum of the vectors
    charges = 0.0                 # atomic charges (e), needs model.dipole = true

    [optim]
    lr = 5e-3
    epochs = 100
    schedule = "plateau"          # or "cosine"
    ema_decay = 0.99
    early_stop = 30

    energy_nll = 0.0              # spread of the energy heads (model.energy_heads > 1)

    [run]
    init = ""                     # start from a checkpoint's weights (fine-tuning)
    out = "runs/ethanol"
    seed = 0
    dtype = "float64"
    device = "cpu"
    compile = false               # true: the training step traced and compiled by Inductor
                                  # (1.6-2x faster per epoch, 0.5-2.5 min of
                                  # compiling; tfn_md.train.compiled_step)

The resolved configuration is stored inside every checkpoint.
"""

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..validation import check_bool, check_device, check_int, check_real

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
    charges: float = 0.0  # atomic charges (model.dipole)
    energy_nll: float = 0.0  # Gaussian NLL of the heads' spread (model.energy_heads > 1)


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
    init: str = ""  # start from these weights (checkpoint path or shipped name), not at random
    compile: bool = False  # compile the training step (tfn_md.train.compiled_step)


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
        """Build and check a configuration; errors name the key, the value and what is
        allowed (``optim.lr = 'fast' is not allowed: a finite number > 0``)."""
        kwargs = section_tables(cls, raw, {"model": _check_model}, _CHECKS)
        cfg = cls(**kwargs)
        if not cfg.data.train:
            raise ValueError("data.train = '' is not allowed: the path of a dataset file")
        if not cfg.data.valid and cfg.data.valid_fraction == 0.0:
            raise ValueError("data.valid_fraction = 0.0 is not allowed without data.valid: "
                             "a fraction in (0, 1), or a validation file in data.valid")
        if base_dir is not None:  # paths in a config file are relative to it
            for key in ("train", "valid", "test"):
                value = getattr(cfg.data, key)
                if value and not Path(value).is_absolute():
                    setattr(cfg.data, key, str(base_dir / value))
            init = cfg.run.init  # a path relative to the file, or a shipped potential's name
            if init and not Path(init).is_absolute() and (base_dir / init).exists():
                cfg.run.init = str(base_dir / init)
        dipole_head = bool(cfg.model.get("dipole", False))
        if cfg.loss.charges > 0 and not dipole_head:
            raise ValueError(f"loss.charges = {cfg.loss.charges} needs model.dipole = true "
                             "(the charge readout is what it trains)")
        if cfg.loss.energy_nll > 0 and int(cfg.model.get("energy_heads", 1)) < 2:
            raise ValueError(f"loss.energy_nll = {cfg.loss.energy_nll} needs model.energy_heads "
                             ">= 2 (the spread of the heads is what it trains)")
        return cfg


def section_tables(cls, raw: dict, free: dict, checks: dict | None = None) -> dict:
    """The keyword arguments of the config dataclass ``cls`` from a TOML table ``raw`` of
    sections: each section a dataclass of known keys (each value passed through
    ``checks[section][key](name, value)`` where given), except the ``free`` ones, whose
    table goes through ``free[section](table)``. Unknown sections and keys raise
    ValueError naming them and what is known."""
    sections = {f.name: f for f in fields(cls)}
    if not isinstance(raw, dict):
        raise ValueError(f"the configuration must be a table of sections, got {raw!r}")
    unknown = set(raw) - set(sections)
    if unknown:
        raise ValueError(f"unknown config sections {sorted(unknown)}; known: {sorted(sections)}")
    kwargs = {}
    for name, f in sections.items():
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise ValueError(f"[{name}] must be a table of keys, got {value!r}")
        if name in free:
            kwargs[name] = free[name](value)
            continue
        section_type = f.default_factory().__class__
        known = {x.name for x in fields(section_type)}
        bad = set(value) - known
        if bad:
            raise ValueError(f"unknown keys {sorted(bad)} in [{name}]; known: {sorted(known)}")
        if checks is not None:
            value = {key: checks[name][key](f"{name}.{key}", v) for key, v in value.items()}
        kwargs[name] = section_type(**value)
    return kwargs


def _choice(*allowed):
    def check(name, value):
        if value not in allowed:
            raise ValueError(f"{name} = {value!r} is not allowed: one of {list(allowed)}")
        return value
    return check


def _text(name, value):
    if not isinstance(value, str):
        raise TypeError(f"{name} = {value!r} is not allowed: a string")
    return value


def _fraction(upper_open: bool):
    def check(name, value):
        x = check_real(name, value, 0.0, maximum=1.0)
        if upper_open and x == 1.0:
            raise ValueError(f"{name} = {value!r} is not allowed: a number in [0, 1) "
                             "(1 leaves nothing to train on)")
        return x
    return check


def _weights(name, value):
    if not isinstance(value, dict):
        raise TypeError(f"{name} = {value!r} is not allowed: a table of name = weight, "
                        "e.g. { dipole = 1.0 }")
    return {str(k): check_real(f"{name}.{k}", w, 0.0) for k, w in value.items()}


def _real(minimum=None, strict=False, maximum=None):
    return lambda name, v: check_real(name, v, minimum, strict=strict, maximum=maximum)


def _int(minimum):
    return lambda name, v: check_int(name, v, minimum)


def _device(name, value):
    check_device(name, _text(name, value))
    return value


_CHECKS = {
    "data": {"train": _text, "valid": _text, "test": _text, "valid_fraction": _fraction(True),
             "batch_size": _int(1), "num_workers": _int(0)},
    "loss": {"energy": _real(0.0), "forces": _real(0.0), "stress": _real(0.0),
             "vectors": _weights, "charges": _real(0.0), "energy_nll": _real(0.0)},
    "optim": {"lr": _real(0.0, strict=True), "weight_decay": _real(0.0), "epochs": _int(1),
              "schedule": _choice("plateau", "cosine"), "patience": _int(0),
              "factor": _real(0.0, strict=True, maximum=1.0), "min_lr": _real(0.0),
              "ema_decay": _fraction(True), "early_stop": _int(1),
              "grad_clip": _real(0.0, strict=True)},
    "run": {"out": _text, "seed": _int(0), "dtype": _choice("float32", "float64"),
            "device": _device, "plots": check_bool, "init": _text, "compile": check_bool},
}


def _check_model(value: dict) -> dict:
    """[model]: keyword arguments of ``TFN`` (species may come from the data)."""
    from ..model import TFNConfig

    known = {f.name for f in fields(TFNConfig)}
    bad = set(value) - known
    if bad:
        raise ValueError(f"unknown keys {sorted(bad)} in [model]; known: {sorted(known)}")
    probe = {"species": ["H"], **value}  # checks every value now, not at the first step
    try:
        TFNConfig(**probe)
    except (TypeError, ValueError) as err:
        raise type(err)(f"model.{err}") from None
    return dict(value)


def load_config(path) -> TrainConfig:
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML ({err})") from None
    try:
        return TrainConfig.from_dict(raw, base_dir=path.parent)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{path}: {err}") from None
