"""Injection: write vectors into the residual stream (replace / add), layer sweeps, reports."""

from tvlens.injection.evaluate import (
    TaskResult,
    VectorMethodResult,
    VectorReport,
    evaluate_task_vectors,
    format_table,
    run_task_vectors,
    save_report,
    summary_table,
)
from tvlens.injection.inject import inject, injection_hook
from tvlens.injection.sweep import layer_sweep_correct, layer_sweep_logits

__all__ = [
    "VectorMethodResult",
    "TaskResult",
    "VectorReport",
    "evaluate_task_vectors",
    "format_table",
    "run_task_vectors",
    "inject",
    "injection_hook",
    "layer_sweep_correct",
    "layer_sweep_logits",
    "save_report",
    "summary_table",
]
