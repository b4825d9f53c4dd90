"""Training: small transformers trained from scratch on ICL tasks, saved as checkpoints.

:mod:`tvlens.training.engine` is the one training loop; a run kind plugs into it with a
:class:`RunKind` (its model, batches, loss, evaluation and files).
"""

from tvlens.training.config import (
    PRESETS,
    TrainConfig,
    TrainingConfig,
    checkpoint_steps,
    get_preset,
)
from tvlens.training.engine import EpochData, RunKind, StepData, TrainResult, train_run
from tvlens.training.train import evaluate_checkpoint, train_synthetic

__all__ = [
    "PRESETS",
    "EpochData",
    "RunKind",
    "StepData",
    "TrainConfig",
    "TrainResult",
    "TrainingConfig",
    "checkpoint_steps",
    "evaluate_checkpoint",
    "get_preset",
    "train_run",
    "train_synthetic",
]
