"""The seed papers' pretrained-model experiments, run on any loaded model (measured on SmolLM2-135M:
docs/results/pretrained.md). Names are imported lazily, so that the configurations
(``tvlens.experiments.configs``), which the CLI reads at start-up, do not load torch."""

from importlib import import_module
from typing import Any

_NAMES = {
    "FV_SHORT_TASKS": "pretrained",
    "combine_vector_tables": "pretrained",
    "named_suites": "pretrained",
    "head_comparison": "pretrained",
    "layer_finetuning": "pretrained",
    "sized_suite": "pretrained",
    "task_decodability_table": "pretrained",
    "vector_table": "pretrained",
    "DecodabilityConfig": "configs",
    "HeadsConfig": "configs",
    "LayerFinetuneConfig": "configs",
    "VectorTableConfig": "configs",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(f"tvlens.experiments.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'tvlens.experiments' has no attribute {name!r}")
