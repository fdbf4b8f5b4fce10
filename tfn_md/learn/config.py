"""The configuration of ``tfn-md learn``: a TOML file of typed sections.

Every key, commented, with the value the one-command path uses:
``tfn_md/learn/template.toml``, printed by ``tfn-md learn --template``. Sections:
[system] (a molecule name or structure files), [reference] (a tblite method or an ASE
calculator ``module:Class``), [initial] (reference MD before the first training; for a
molecule also free atoms and stretched bonds, :mod:`tfn_md.learn.dissociation`), [test]
(independent reference trajectories, never trained on), [explore] (MD with the potential
and what flags a frame), [budget] (labels, iterations, minutes), [model] [loss] [optim]
(as in ``tfn-md train``, with ``retrain_epochs`` and ``retrain_lr``), [run] (output
folder, seed, dtype, device, whether the training step is compiled).
A key a file leaves out takes the default of the dataclasses below (so files written
before keep their meaning); the one-command path starts from the template's values.

Paths are relative to the configuration file.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..train.config import section_tables
from ..validation import check_bool, check_int, check_real

__all__ = ["LearnConfig", "load_learn_config"]


@dataclass
class SystemSection:
    molecule: str = ""
    structure: str | list = ""


@dataclass
class ReferenceSection:
    method: str = ""
    calculator: str = ""
    kwargs: dict = field(default_factory=dict)


@dataclass
class InitialSection:
    data: str | list = ""
    temperatures: list = field(default_factory=lambda: [300.0])
    n: int = 50
    interval: int = 20
    timestep: float = 0.5
    friction: float = 0.01
    equilibration: int = 100
    stretch: list = field(default_factory=list)  # bond lengths / covalent radii sum
    hop: list = field(default_factory=list)  # H-to-neighbour distances / covalent radii sum
    stretch_frames: int = 2  # frames per bond or hop (tfn_md.learn.dissociation)


@dataclass
class TestSection:
    temperatures: list = field(default_factory=lambda: [350.0, 700.0])
    trajectories: int = 0
    n: int = 40
    interval: int = 20
    equilibration: int = 400


@dataclass
class ExploreSection:
    temperatures: list = field(default_factory=lambda: [300.0])
    runs: int = 1
    steps: int = 2000
    interval: int = 20
    timestep: float = 0.5
    friction: float = 0.01
    threshold: float = 0.1
    energy_threshold: float = 0.0
    contact: float = 1.2
    new_bond: float = 0.0
    bond: float = 0.0
    statistic: str = "rms"
    stop: float = 1.0
    max_select: int = 20
    min_separation: int = 100


@dataclass
class BudgetSection:
    max_labels: int = 500
    max_iterations: int = 10
    minutes: float = 0.0


@dataclass
class RunSection:
    out: str = "learn"
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    test: str = ""
    init: str = ""
    compile: bool = True  # the training step compiled (tfn_md.train.compiled_step)


@dataclass
class LearnConfig:
    system: SystemSection = field(default_factory=SystemSection)
    reference: ReferenceSection = field(default_factory=ReferenceSection)
    initial: InitialSection = field(default_factory=InitialSection)
    test: TestSection = field(default_factory=TestSection)
    explore: ExploreSection = field(default_factory=ExploreSection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    model: dict = field(default_factory=dict)
    loss: dict = field(default_factory=dict)
    optim: dict = field(default_factory=dict)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, base_dir: Path | None = None) -> LearnConfig:
        """Build and check; errors name the key, the value and what is allowed."""
        kwargs = section_tables(cls, raw, {name: dict for name in ("model", "loss", "optim")})
        cfg = cls(**kwargs)
        cfg._check()
        if base_dir is not None:
            for section, key in (("system", "structure"), ("run", "out"), ("run", "test"),
                                 ("initial", "data"), ("run", "init")):
                obj = getattr(cfg, section)
                value = getattr(obj, key)
                if isinstance(value, list):
                    setattr(obj, key, [str(base_dir / v) for v in value])
                elif value and not Path(value).is_absolute():
                    if key != "init" or (base_dir / value).exists():  # init: or a name
                        setattr(obj, key, str(base_dir / value))
        return cfg

    def _check(self) -> None:
        s, r = self.system, self.reference
        if bool(s.molecule) == bool(s.structure):
            raise ValueError("[system]: give exactly one of molecule (an ase.build.molecule "
                             "name) and structure (a file, or a list of files)")
        for key, value in (("system.structure", s.structure),
                           ("initial.data", self.initial.data)):
            if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"{key} = {value!r} is not allowed: a file name or a list "
                                 "of file names")
        if bool(r.method) == bool(r.calculator):
            raise ValueError("[reference]: give exactly one of method (a tblite method, e.g. "
                             "'GFN2-xTB') and calculator ('module:Class' of an ASE calculator)")
        if r.calculator and ":" not in r.calculator:
            raise ValueError(f"reference.calculator = {r.calculator!r} is not allowed: "
                             "'module:Class', e.g. 'ase.calculators.emt:EMT'")
        if not isinstance(r.kwargs, dict):
            raise ValueError(f"reference.kwargs = {r.kwargs!r} is not allowed: a table")
        for sec_name in ("initial", "explore"):
            sec = getattr(self, sec_name)
            temps = sec.temperatures
            if not isinstance(temps, list) or not temps:
                raise ValueError(f"{sec_name}.temperatures = {temps!r} is not allowed: "
                                 "a non-empty list of temperatures in K")
            sec.temperatures = [check_real(f"{sec_name}.temperatures[{k}]", t, 0.0,
                                           strict=True, unit="K") for k, t in enumerate(temps)]
            check_real(f"{sec_name}.timestep", sec.timestep, 0.0, strict=True, unit="fs")
            check_real(f"{sec_name}.friction", sec.friction, 0.0)
            check_int(f"{sec_name}.interval", sec.interval, 1)
        check_int("initial.n", self.initial.n, 0 if self.initial.data else 2)
        check_int("initial.equilibration", self.initial.equilibration, 0)
        for key, low in (("stretch", 1.0), ("hop", 0.5)):
            values = getattr(self.initial, key)
            if not isinstance(values, list):
                raise ValueError(f"initial.{key} = {values!r} is not allowed: a list of "
                                 "distances in units of the sum of covalent radii ([] for none)")
            setattr(self.initial, key, [check_real(f"initial.{key}[{k}]", v, low, strict=True)
                                        for k, v in enumerate(values)])
        check_int("initial.stretch_frames", self.initial.stretch_frames, 1)
        e = self.explore
        for key, low in (("runs", 1), ("steps", 1), ("max_select", 1), ("min_separation", 0)):
            check_int(f"explore.{key}", getattr(e, key), low)
        check_real("explore.threshold", e.threshold, 0.0, strict=True, unit="eV/A")
        check_real("explore.energy_threshold", e.energy_threshold, 0.0, unit="eV")
        check_real("explore.contact", e.contact, 0.0, unit="A")
        if e.new_bond:
            check_real("explore.new_bond", e.new_bond, 0.0, strict=True)
            if e.new_bond >= 1.3:  # bonded_pairs: closer than 1.3 x the radii at the start
                raise ValueError(f"explore.new_bond = {e.new_bond!r} is not allowed: below "
                                 "1.3 (pairs closer than 1.3 x the sum of covalent radii "
                                 "are bonds of the start), or 0 (off)")
        if e.bond:
            check_real("explore.bond", e.bond, 1.3, strict=True)
        if e.statistic not in ("rms", "max"):
            raise ValueError(f"explore.statistic = {e.statistic!r} is not allowed: 'rms' or "
                             "'max'")
        check_real("explore.stop", e.stop, e.threshold, strict=True, unit="eV/A")
        t = self.test
        if not isinstance(t.temperatures, list) or not t.temperatures:
            raise ValueError(f"test.temperatures = {t.temperatures!r} is not allowed: a "
                             "non-empty list of temperatures in K")
        t.temperatures = [check_real(f"test.temperatures[{k}]", v, 0.0, strict=True, unit="K")
                          for k, v in enumerate(t.temperatures)]
        check_int("test.trajectories", t.trajectories, 0)
        check_int("test.n", t.n, 2)
        check_int("test.interval", t.interval, 1)
        check_int("test.equilibration", t.equilibration, 0)
        check_real("budget.minutes", self.budget.minutes, 0.0, unit="min")
        check_int("budget.max_labels", self.budget.max_labels, 0)
        check_int("budget.max_iterations", self.budget.max_iterations, 1)
        check_int("run.seed", self.run.seed, 0)
        if self.run.dtype not in ("float32", "float64"):
            raise ValueError(f"run.dtype = {self.run.dtype!r} is not allowed: float32, float64")
        check_bool("run.compile", self.run.compile)
        self.model.setdefault("energy_heads", 8)
        if int(self.model["energy_heads"]) < 2:
            raise ValueError(f"model.energy_heads = {self.model['energy_heads']} is not allowed "
                             "here: >= 2 (the spread of the heads selects the frames)")
        self.retrain_epochs = int(self.optim.pop("retrain_epochs", 20))
        check_int("optim.retrain_epochs", self.retrain_epochs, 1)
        self.retrain_lr = self.optim.pop("retrain_lr", None)
        if self.retrain_lr is not None:
            check_real("optim.retrain_lr", self.retrain_lr, 0.0, strict=True)

    def train_dict(self, data: Path, out: Path, init: str, first: bool,
                   valid: Path | None = None) -> dict:
        """The ``tfn-md train`` configuration of one training (a dict for TrainConfig):
        validated on ``valid`` (a fixed file) where given, else on a tenth of ``data``."""
        optim = {"schedule": "cosine", **self.optim}
        if not first:  # a warm start: a short cosine from retrain_lr, not a restart at lr
            optim["epochs"] = self.retrain_epochs
            optim["early_stop"] = max(int(optim.get("early_stop", 30)), self.retrain_epochs)
            if self.retrain_lr is not None:
                optim["lr"] = self.retrain_lr
                optim["min_lr"] = min(float(optim.get("min_lr", 1e-5)), self.retrain_lr)
        loss = {"energy": 1.0, "forces": 10.0, "energy_nll": 1e-3, **self.loss}
        return {
            "data": {"train": str(data), "batch_size": 8,
                     **({"valid": str(valid)} if valid else {"valid_fraction": 0.1})},
            "model": dict(self.model),
            "loss": loss,
            "optim": optim,
            "run": {"out": str(out), "seed": self.run.seed, "dtype": self.run.dtype,
                    "device": self.run.device, "init": init, "compile": self.run.compile},
        }


def load_learn_config(path) -> LearnConfig:
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML ({err})") from None
    try:
        return LearnConfig.from_dict(raw, base_dir=path.parent)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{path}: {err}") from None
