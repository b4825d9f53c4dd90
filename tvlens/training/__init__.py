"""Training: small transformers trained from scratch on ICL tasks, saved as checkpoints.

:mod:`tvlens.training.engine` is the one training loop; a run kind plugs into it with a
:class:`RunKind` (its model, batches, loss, evaluation and files). Names are imported lazily,
so that the configurations (``tvlens.training.config``), which the CLI reads at start-up, do
not load torch.
"""

from importlib import import_module
from typing import Any

_NAMES = {
    "PRESETS": "config",
    "TrainConfig": "config",
    "TrainingConfig": "config",
    "checkpoint_steps": "config",
    "get_preset": "config",
    "EpochData": "engine",
    "RunKind": "engine",
    "StepData": "engine",
    "TrainResult": "engine",
    "train_run": "engine",
    "evaluate_checkpoint": "train",
    "train_synthetic": "runner",  # torch-free: checks first, then imports .train
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(f"tvlens.training.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'tvlens.training' has no attribute {name!r}")
