"""Injection: write vectors into the residual stream (replace / add), layer sweeps, reports.

Names are imported lazily, so that :func:`run_task_vectors` (:mod:`.runner`) refuses a bad
model, suite or output folder before torch is imported (issue 29). ``inject`` is both a
submodule and a function: the package's ``inject`` is always the function (as when this
package imported it eagerly), even after something imported the submodule
``tvlens.injection.inject``, which would otherwise rebind the name to the module.
"""

import sys
from importlib import import_module
from types import ModuleType
from typing import Any

_NAMES = {
    "TaskResult": "evaluate",
    "VectorMethodResult": "evaluate",
    "VectorReport": "evaluate",
    "evaluate_task_vectors": "evaluate",
    "format_table": "evaluate",
    "save_report": "evaluate",
    "summary_table": "evaluate",
    "run_task_vectors": "runner",  # torch-free: checks first, then imports .evaluate
    "inject": "inject",
    "injection_hook": "inject",
    "layer_sweep_correct": "sweep",
    "layer_sweep_logits": "sweep",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(f"tvlens.injection.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'tvlens.injection' has no attribute {name!r}")


class _Package(ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # The import system sets a package's attribute to each submodule it loads; the
        # submodule ``inject`` would hide the function ``inject`` (served by __getattr__).
        if name == "inject" and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
