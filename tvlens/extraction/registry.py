"""The extraction methods by name: a method is a class (:mod:`tvlens.extraction.methods`)
that owns its options, labels and what it writes where; this registry maps names to those
classes. Configs, the task-vector report
(:func:`tvlens.injection.evaluate.evaluate_task_vectors`), the experiments, the figures and the
CLI read their choices and labels from here, and take a method object wherever they take a
name (``methods=[FunctionVector(top_k_heads=4)]``).

Adding a method is one class and one :func:`register_extraction_method` (or, from another
package, an entry point in the group ``tvlens.extraction_methods`` naming the class, loaded
the first time the registry is read). The classes import no torch, so the CLI reads its
choices without loading it.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from typing import Any

from tvlens.errors import ConfigError
from tvlens.extraction.methods import (
    I2CL,
    ICV,
    LTV,
    ExtractionMethod,
    FunctionVector,
    HendelTaskVector,
    StateVector,
    method_name,
)

ENTRY_POINT_GROUP = "tvlens.extraction_methods"
EXTRACTION_METHODS: dict[str, type[ExtractionMethod]] = {}
ALL = "all"  # every registered method
OLD_ALL = "both"  # its old name (when there were two methods), still accepted
_entry_points_loaded = False


def register_extraction_method(method: type[ExtractionMethod]) -> type[ExtractionMethod]:
    """Register a method class by its ``name`` (usable as a class decorator)."""
    if not (isinstance(method, type) and issubclass(method, ExtractionMethod)):
        raise ConfigError(
            f"An extraction method is an ExtractionMethod subclass, got {method!r}: see "
            "tvlens.extraction.methods."
        )
    if not method.name:
        raise ConfigError(f"{method.__name__} has no class-level name.")
    if method.name in (*EXTRACTION_METHODS, ALL, OLD_ALL):
        raise ConfigError(f"An extraction method named {method.name!r} is already registered.")
    EXTRACTION_METHODS[method.name] = method
    return method


def load_entry_points() -> None:
    """Register the methods other packages declare in the ``tvlens.extraction_methods``
    entry-point group (once; a name already registered is left as it is)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
            if getattr(cls, "name", None) not in EXTRACTION_METHODS:
                register_extraction_method(cls)
        except Exception as e:  # another package's plugin: warn, and tvlens still runs
            warnings.warn(
                f"The extraction method {ep.name!r} ({ep.value}, entry point group "
                f"{ENTRY_POINT_GROUP!r}) was not registered: {type(e).__name__}: {e}",
                stacklevel=2,
            )


def get_extraction_method(name: str) -> type[ExtractionMethod]:
    """The class registered as ``name``."""
    load_entry_points()
    if name not in EXTRACTION_METHODS:
        raise ConfigError(
            f"Unknown method {name!r}: the extraction methods are {list(EXTRACTION_METHODS)}."
        )
    return EXTRACTION_METHODS[name]


def method_object(method: str | ExtractionMethod | type[ExtractionMethod]) -> ExtractionMethod:
    """A method as an object: a registered name (its default options), a class (its default
    options) or an object (as it is)."""
    if isinstance(method, str):
        return get_extraction_method(method)()
    if isinstance(method, type) and issubclass(method, ExtractionMethod):
        return method()
    if isinstance(method, ExtractionMethod):
        return method
    raise ConfigError(
        f"A method is a name or an ExtractionMethod object, got {type(method).__name__}."
    )


def extraction_choices() -> tuple[str, ...]:
    """What ``methods`` (``--methods``) accepts: registered methods, or ``all``."""
    load_entry_points()
    return (*EXTRACTION_METHODS, ALL)


def expand_methods(methods: Any) -> tuple[Any, ...]:
    """``methods`` (a name, ``"a,b"``, a method object, or a sequence of them) in order,
    without repeats: names are checked and kept as names, ``all`` is every registered method
    (``both``, its old name, is accepted with a ``DeprecationWarning``), a method class
    becomes its object with default options, objects are kept."""
    load_entry_points()
    if isinstance(methods, str):
        items: list[Any] = methods.split(",")
    elif isinstance(methods, (ExtractionMethod, type)):
        items = [methods]
    else:
        items = list(methods)
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            name = item.strip()
            if name == OLD_ALL:
                warnings.warn(f"{OLD_ALL!r} is renamed {ALL!r}.", DeprecationWarning, stacklevel=3)
                name = ALL
            new: list[Any] = (
                list(EXTRACTION_METHODS) if name == ALL else [get_extraction_method(name).name]
            )
        else:
            new = [method_object(item)]
        for m in new:
            same = [x for x in out if method_name(x) == method_name(m)]
            if same:  # the same method again (a name is its default object): kept once
                if method_object(same[0]) != method_object(m):
                    raise ConfigError(f"Two methods are named {method_name(m)!r}: rename one.")
                continue
            out.append(m)
    if not out:
        raise ConfigError(f"methods is empty: name one of {list(extraction_choices())}.")
    return tuple(out)


# The default where one method is asked for: the task vector, the field's first method.
DEFAULT_METHOD = HendelTaskVector.name
register_extraction_method(HendelTaskVector)
register_extraction_method(FunctionVector)
# The field's other methods (Liu et al. 2024; Li et al. 2025; Li et al. 2024; Saglam et al. 2025).
register_extraction_method(ICV)
register_extraction_method(I2CL)
register_extraction_method(StateVector)
register_extraction_method(LTV)

__all__ = [
    "ALL",
    "DEFAULT_METHOD",
    "ENTRY_POINT_GROUP",
    "EXTRACTION_METHODS",
    "ExtractionMethod",
    "expand_methods",
    "extraction_choices",
    "get_extraction_method",
    "method_object",
    "register_extraction_method",
]
