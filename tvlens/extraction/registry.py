"""The extraction methods by name: what each extracts, how its vector is written into the
residual stream, and its label in tables and figures. Configs, the task-vector report
(:func:`tvlens.injection.evaluate.evaluate_task_vectors`), the experiments, the figures and the
CLI read their choices and labels from here.

Adding an extraction method is one function that takes an :class:`ExtractionRequest` and
returns ``(TaskVector, extras)``, and one :func:`register_extraction_method` call. The
function is named as ``"module:function"`` and imported when it runs, so this module stays
light (the CLI reads its choices without loading torch).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tvlens.errors import ConfigError


@dataclass(frozen=True)
class ExtractionRequest:
    """What an extractor gets: the model, the task's training examples (demonstrations and
    dummy queries), and the report's options."""

    model: Any
    task: Any
    k: int
    n_extract: int
    seed: int
    template: Any
    top_k_heads: int = 10
    max_batch: int = 1024
    progress: bool = True


@dataclass(frozen=True)
class ExtractionMethod:
    """One extraction method.

    Attributes:
        name: Its name (``methods=``, ``--methods``, the report's keys).
        extractor: ``"module:function"``: ``function(request) -> (TaskVector, extras)``, with
            one vector per layer (``extras["heads"]``: a head table, if the method has one).
        mode: How its vector is written at the query: ``replace`` or ``add``.
        label: For figure legends.
        column: For table headers (the chosen layer follows in parentheses).
        title: For sentences ("The task vector (...) replaces ..."); default: the name.
        one_vector: The same vector at every layer (a function vector): the vector's own
            ``layers`` become the one chosen on dev.
        min_k: The fewest demonstrations it works with.
    """

    name: str
    extractor: str
    mode: Literal["replace", "add"]
    label: str
    column: str
    one_vector: bool = False
    min_k: int = 1
    description: str = ""
    defaults: dict = field(default_factory=dict)
    title: str = ""

    def extract(self, request: ExtractionRequest) -> tuple[Any, dict[str, Any]]:
        module, _, fn = self.extractor.partition(":")
        return getattr(importlib.import_module(module), fn)(request)


EXTRACTION_METHODS: dict[str, ExtractionMethod] = {}
ALL = "all"  # every registered method
OLD_ALL = "both"  # its old name (when there were two methods), still accepted


def register_extraction_method(method: ExtractionMethod) -> ExtractionMethod:
    if method.name in (*EXTRACTION_METHODS, ALL, OLD_ALL):
        raise ConfigError(f"An extraction method named {method.name!r} is already registered.")
    EXTRACTION_METHODS[method.name] = method
    return method


def get_extraction_method(name: str) -> ExtractionMethod:
    if name not in EXTRACTION_METHODS:
        raise ConfigError(
            f"Unknown method {name!r}: the extraction methods are {list(EXTRACTION_METHODS)}."
        )
    return EXTRACTION_METHODS[name]


def extraction_choices() -> tuple[str, ...]:
    """What ``methods`` (``--methods``) accepts: registered methods, or ``all``."""
    return (*EXTRACTION_METHODS, ALL)


def expand_methods(methods: str | Sequence[str]) -> tuple[str, ...]:
    """``methods`` (a name, ``"a,b"`` or a sequence of names) as registered method names,
    in order, without repeats: ``all`` is every registered method (``both``, its old name,
    is accepted with a ``DeprecationWarning``)."""
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    out: list[str] = []
    for name in (n.strip() for n in names):
        if name == OLD_ALL:
            warnings.warn(f"{OLD_ALL!r} is renamed {ALL!r}.", DeprecationWarning, stacklevel=3)
            name = ALL
        for m in EXTRACTION_METHODS if name == ALL else (get_extraction_method(name).name,):
            if m not in out:
                out.append(m)
    if not out:
        raise ConfigError(f"methods is empty: name one of {list(extraction_choices())}.")
    return tuple(out)


# The default where one method is asked for: the task vector, the field's first method.
DEFAULT_METHOD = "hendel"
register_extraction_method(ExtractionMethod(
    DEFAULT_METHOD, "tvlens.extraction.residual:extract_hendel", "replace",
    label="task vector (Hendel, replace)", column="task vector (layer)", title="task vector",
    description="Hendel et al. 2023: the mean residual at the query of k-shot prompts",
))  # fmt: skip
register_extraction_method(ExtractionMethod(
    "fv", "tvlens.extraction.function_vectors:extract_fv", "add",
    label="function vector (add)", column="function vector (layer)", one_vector=True,
    title="function vector", min_k=2,
    description="Todd et al. 2024: the sum of the top heads' mean outputs",
))  # fmt: skip
