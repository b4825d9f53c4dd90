"""Injection: write vectors into the residual stream (replace / add), layer sweeps, reports.
Names are imported lazily, so that the configuration (``config.py``), which the CLI reads at
start-up, does not load torch.
"""

from importlib import import_module
from typing import Any

_NAMES = {
    "MethodResult": "tvlens.injection.evaluate",
    "TaskResult": "tvlens.injection.evaluate",
    "VectorReport": "tvlens.injection.evaluate",
    "evaluate_task_vectors": "tvlens.injection.evaluate",
    "format_table": "tvlens.injection.evaluate",
    "run_task_vectors": "tvlens.injection.evaluate",
    "save_report": "tvlens.injection.evaluate",
    "summary_table": "tvlens.injection.evaluate",
    "inject": "tvlens.injection.inject",
    "injection_hook": "tvlens.injection.inject",
    "layer_sweep_correct": "tvlens.injection.sweep",
    "layer_sweep_logits": "tvlens.injection.sweep",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'tvlens.injection' has no attribute {name!r}")
