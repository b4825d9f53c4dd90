"""Adaptive Task Vectors (Kang et al. 2025): a generator reads the query alone and writes one
vector per layer into a frozen target.

Modules: ``generator`` (LM + expansion), ``steering`` (the ``steer`` context manager),
``affine`` (the static affine ATV of the paper's equal-rank theorem, no generator),
``data`` (splits, batches, the synthetic setting), ``model`` (``ATV``: forward, loss,
prediction, save / load), ``train`` (training on tvlens's engine), ``config`` (options and
presets). The comparison of ATV with the other methods is :mod:`tvlens.compare`.
Names are imported lazily, so that ``tvlens --help`` does not load torch.
"""

from importlib import import_module
from typing import Any

_NAMES = {
    "ATV": "model",
    "ATVSpec": "model",
    "ATVMismatchError": "model",
    "ATVGenerator": "generator",
    "steer": "steering",
    "StaticAffineATV": "affine",
    "steer_affine": "affine",
    "ATVConfig": "config",
    "train_atv": "train",
    "train_synthetic_target": "train",
    "query_identifiable_suite": "data",
    "split_queries": "data",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(f"tvlens.atv.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'tvlens.atv' has no attribute {name!r}")
