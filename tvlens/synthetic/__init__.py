"""Synthetic ICL training: small transformers trained from scratch, saved as checkpoints."""

from tvlens.synthetic.config import PRESETS, TrainConfig, checkpoint_steps, get_preset
from tvlens.synthetic.train import TrainResult, evaluate_checkpoint, train_synthetic

__all__ = [
    "PRESETS",
    "TrainConfig",
    "TrainResult",
    "checkpoint_steps",
    "evaluate_checkpoint",
    "get_preset",
    "train_synthetic",
]
