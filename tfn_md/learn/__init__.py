"""Active learning: ``tfn-md learn CONFIG.toml`` (see :mod:`tfn_md.learn.loop`)."""

from .config import LearnConfig, load_learn_config
from .loop import Learner

__all__ = ["LearnConfig", "Learner", "load_learn_config"]
