"""The seed papers' pretrained-model experiments, run on any loaded model (measured on SmolLM2-135M:
docs/results/pretrained.md)."""

from tvlens.experiments.pretrained import (
    FV_SHORT_TASKS,
    head_comparison,
    sized_suite,
    task_decodability_table,
    vector_table,
)

__all__ = [
    "FV_SHORT_TASKS",
    "head_comparison",
    "sized_suite",
    "task_decodability_table",
    "vector_table",
]
