"""Activation patching: residual / attention / MLP / head patching that recomputes only what each
patch can change (:mod:`~tvlens.patching.exact`), attribution patching
(:mod:`~tvlens.patching.attribution`), and last-token patching on a cached prefix
(:mod:`~tvlens.patching.last_token`, used by task-vector layer sweeps).
Names are imported lazily, so that the configuration (``config.py``), which the CLI reads at
start-up, does not load torch, and :func:`run_patching` (:mod:`.runner`) refuses a bad model,
suite or output folder before torch is imported.
"""

from importlib import import_module
from typing import Any

_NAMES = {
    "cache_prefix": "tvlens.models.resume",
    "resume": "tvlens.models.resume",
    "skipped_blocks": "tvlens.models.resume",
    "attribution_patch": "tvlens.patching.attribution",
    "rank_correlation": "tvlens.patching.attribution",
    "patch": "tvlens.patching.exact",
    "COMPONENTS": "tvlens.patching.inputs",
    "POSITIONS": "tvlens.patching.inputs",
    "component_hook": "tvlens.patching.inputs",
    "PrefixState": "tvlens.patching.last_token",
    "chunks": "tvlens.patching.last_token",
    "last_token_logits": "tvlens.patching.last_token",
    "run_prefix": "tvlens.patching.last_token",
    "AnswerProb": "tvlens.patching.metrics",
    "LogitDiff": "tvlens.patching.metrics",
    "Metric": "tvlens.patching.metrics",
    "PatchResult": "tvlens.patching.result",
    "position_labels": "tvlens.patching.result",
    "PatchingRun": "tvlens.patching.run",
    "patching_prompts": "tvlens.patching.run",
    "run_patching": "tvlens.patching.runner",  # torch-free: checks first, then the stage
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'tvlens.patching' has no attribute {name!r}")
