"""The comparison of methods that make a frozen target do a task (Kang et al. 2025's claims,
measured): zero-shot, ICL, task and function vectors (the extraction methods), retrieval,
LoRA, prefix tuning and ATV (:mod:`tvlens.atv`), on the same queries, scored the same way.

Modules: ``methods`` (the one method base class, :class:`SteeringMethod`, its zero-shot and
ICL methods, the one :class:`MethodResult` and the small comparison loop), ``registry``
(the comparison's methods by name: what each sees, whether it is trained, its sweep; a
fixed-vector baseline per extraction method), ``config`` (``CompareConfig`` and presets),
``options`` (each method family's block of settings), ``data`` (tasks, splits, instructions),
``setup`` (the cells), ``context`` (what a cell reads; the methods import it, not the
configuration), ``run`` (``run_compare``: one cell, fit and score),
``workers`` (processes sharing the cells), ``report`` (statistics, verdicts, tables),
``baselines`` (the vector baselines), ``tuned`` (the trained ones, ATV's
:class:`ATVMethod` included), ``fitting`` (what the
trained ones share), ``retrieval`` (ELICIT-style), ``distill`` (the equal-rank distillation
test), ``evaluate`` (``tvlens atv eval``), ``demo_step`` (the demo's ATV step).
Names are imported lazily, so that ``tvlens --help`` does not load torch.
"""

from importlib import import_module
from typing import Any

_NAMES = {
    "SteeringMethod": "methods",
    "ZeroShot": "methods",
    "ICL": "methods",
    "ATVMethod": "tuned",
    "MethodResult": "methods",
    "compare_methods": "methods",  # the loop (``compare`` in methods.py)
    "evaluate_run": "evaluate",
    "run_compare": "run",
    "CompareConfig": "config",
    "VectorOptions": "options",
    "PeftOptions": "options",
    "ATVOptions": "options",
    "MethodSpec": "registry",
    "peft_method": "registry",
    "register_method": "registry",
    "run_distill": "distill",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        module = import_module(f"tvlens.compare.{_NAMES[name]}")
        return getattr(module, "compare" if name == "compare_methods" else name)
    raise AttributeError(f"module 'tvlens.compare' has no attribute {name!r}")
