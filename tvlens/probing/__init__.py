"""Probing task encoding: task decodability (leave-one-out kNN), linear probes, separability.

The seed paper's experiments: task families (:mod:`.family`), emergence (:mod:`.emergence`);
the perturbation test (:mod:`.perturbation`: a task's mean state written over another's);
what ``tvlens probe`` / ``tvlens emergence`` run is :mod:`.run` (not imported here, nor the
perturbation test: they load the injection stage).
"""

from tvlens.probing.layers import LayerTD, td_by_layer
from tvlens.probing.measures import (
    TDResult,
    loo_knn_predict,
    probe_accuracy,
    project_2d,
    separability,
    task_decodability,
)
from tvlens.probing.series import (
    TDSeries,
    correlation,
    save_series,
    td_over_checkpoints,
)

__all__ = [
    "TDSeries",
    "correlation",
    "save_series",
    "td_over_checkpoints",
    "LayerTD",
    "td_by_layer",
    "TDResult",
    "loo_knn_predict",
    "probe_accuracy",
    "project_2d",
    "separability",
    "task_decodability",
]
