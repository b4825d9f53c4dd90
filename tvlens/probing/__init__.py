"""Probing task encoding: task decodability (leave-one-out kNN), linear probes, separability."""

from tvlens.probing.layers import LayerTD, td_by_layer
from tvlens.probing.measures import (
    TDResult,
    loo_knn_predict,
    probe_accuracy,
    project_2d,
    separability,
    task_decodability,
)

__all__ = [
    "LayerTD",
    "td_by_layer",
    "TDResult",
    "loo_knn_predict",
    "probe_accuracy",
    "project_2d",
    "separability",
    "task_decodability",
]
