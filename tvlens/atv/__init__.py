"""Adaptive Task Vectors (Kang et al. 2025): a generator reads the query alone and writes one
vector per layer into a frozen target.

Modules: ``generator`` (LM + expansion), ``steering`` (the ``steer`` context manager),
``data`` (splits, batches, the synthetic setting), ``model`` (``ATV``: forward, loss,
prediction, save / load), ``train`` (training on tvlens's engine), ``methods`` (the
``SteeringMethod`` comparison loop), ``evaluate`` (``tvlens atv eval``), ``cli``.
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
    "ATVConfig": "config",
    "train_atv": "train",
    "train_synthetic_target": "train",
    "evaluate_run": "evaluate",
    "query_identifiable_suite": "data",
    "split_queries": "data",
    "SteeringMethod": "methods",
    "ZeroShot": "methods",
    "ICL": "methods",
    "ATVMethod": "methods",
    # The comparison loop of methods.py is exported as ``compare_methods``: the name
    # ``compare`` is the module tvlens.atv.compare, which once imported would shadow a
    # function of the same name (the attribute then depends on import order).
    "compare_methods": "methods",
    "run_compare": "compare",
    "CompareConfig": "compare_config",
    "MethodSpec": "registry",
    "peft_method": "registry",
    "register_method": "registry",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        module = import_module(f"tvlens.atv.{_NAMES[name]}")
        return getattr(module, "compare" if name == "compare_methods" else name)
    if name == "compare":  # the module, whatever was imported before
        return import_module("tvlens.atv.compare")
    raise AttributeError(f"module 'tvlens.atv' has no attribute {name!r}")
