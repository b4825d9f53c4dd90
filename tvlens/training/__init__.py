"""Training: small transformers trained from scratch on ICL tasks, saved as checkpoints."""

from tvlens.training.config import PRESETS, TrainConfig, checkpoint_steps, get_preset
from tvlens.training.train import TrainResult, evaluate_checkpoint, train_synthetic

__all__ = [
    "PRESETS",
    "TrainConfig",
    "TrainResult",
    "checkpoint_steps",
    "evaluate_checkpoint",
    "get_preset",
    "train_synthetic",
]
