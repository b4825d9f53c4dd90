"""Probing task encoding: task decodability (leave-one-out kNN), linear probes, separability.

The seed paper's experiments: task families (:mod:`.family`), emergence (:mod:`.emergence`);
the perturbation test (:mod:`.perturbation`: a task's mean state written over another's);
what ``tvlens emergence`` runs is :mod:`.run` (not imported here, nor the perturbation test:
they load the injection stage); what ``tvlens probe`` runs is :func:`run_probe`
(:mod:`.runner`), which refuses a bad model, suite or output folder before torch is imported.
Names are imported lazily, so that the configuration (``config.py``), which the CLI reads at
start-up, does not load torch.
"""

from importlib import import_module
from typing import Any

_NAMES = {
    "LayerTD": "tvlens.probing.layers",
    "td_by_layer": "tvlens.probing.layers",
    "TDResult": "tvlens.probing.measures",
    "loo_knn_predict": "tvlens.probing.measures",
    "probe_accuracy": "tvlens.probing.measures",
    "project_2d": "tvlens.probing.measures",
    "separability": "tvlens.probing.measures",
    "task_decodability": "tvlens.probing.measures",
    "TDSeries": "tvlens.probing.series",
    "correlation": "tvlens.probing.series",
    "save_series": "tvlens.probing.series",
    "td_over_checkpoints": "tvlens.probing.series",
    "run_probe": "tvlens.probing.runner",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'tvlens.probing' has no attribute {name!r}")
