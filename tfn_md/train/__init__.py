"""Training TFN potentials: configuration, the trainer, evaluation."""

from .config import TrainConfig, load_config
from .trainer import Trainer, batch_loss, evaluate_model

__all__ = ["TrainConfig", "Trainer", "batch_loss", "evaluate_model", "load_config"]
