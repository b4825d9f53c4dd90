"""One configuration dataclass per kind of analysis run: the library's run functions take it,
the CLI fills it, and the run writes it (``to_dict``) into its ``config.json``.

Choices are ``Literal`` fields and counts have lower bounds, both checked once, when the
config is made (:class:`~tvlens.errors.ConfigError` naming the field and what it accepts),
so that nothing deeper has to check them again. The CLI reads its choices from the same
``Literal`` (:func:`choices`). The training runs have theirs in :mod:`tvlens.training`
(``TrainConfig``, ``RegressionConfig``).
"""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal, get_args, get_origin

from tvlens.errors import ConfigError
from tvlens.extraction.registry import expand_methods, extraction_choices, get_extraction_method
from tvlens.runs import EMERGENCE, EVAL, KIND_KEY, PATCH, PROBE, VECTORS


def choices(config: type, name: str) -> tuple[str, ...]:
    """The values the field ``name`` of ``config`` accepts: its ``Literal``, or the registry
    its metadata names (``field(metadata={"choices": fn})``)."""
    meta = next((f.metadata for f in fields(config) if f.name == name), {})
    if "choices" in meta:
        return tuple(meta["choices"]())
    hint = typing.get_type_hints(config)[name]
    if get_origin(hint) is not Literal:
        raise TypeError(f"{config.__name__}.{name} is not a Literal field.")
    return tuple(get_args(hint))


def no_type_check(cls: type) -> type:
    """Marks a config class for jaxtyping's import hook (which skips what is decorated with a
    ``no_type_check``), so that the test suite's runtime type checker does not reject a bad
    choice with its own error before ``__post_init__`` raises the :class:`ConfigError` users
    see. Unlike ``typing.no_type_check`` it leaves ``get_type_hints`` working."""
    return cls


class AnalysisConfig:
    """What the analysis configs share: validation of choices and bounds, and the JSON form."""

    kind: ClassVar[str]
    # field -> smallest allowed value (None values are left alone: "the default").
    minimum: ClassVar[dict[str, int]] = {}

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            registry = f.metadata.get("choices")
            if registry is not None or get_origin(hints[f.name]) is Literal:
                allowed = registry() if registry is not None else get_args(hints[f.name])
                if value not in allowed:
                    raise ConfigError(
                        f"Unknown {f.name} {value!r}: {f.name} must be one of "
                        f"{', '.join(map(str, allowed))}."
                    )
            low = self.minimum.get(f.name)
            if low is not None and value is not None and value < low:
                raise ConfigError(
                    f"{f.name} (--{f.name.replace('_', '-')}) must be >= {low}, got {value}."
                )

    def to_dict(self) -> dict[str, Any]:
        """As written to ``config.json`` (with the run's kind; tuples become lists)."""
        return {KIND_KEY: self.kind, **json.loads(json.dumps(asdict(self)))}  # type: ignore[call-overload]


@no_type_check
@dataclass(frozen=True)
class EvalConfig(AnalysisConfig):
    """``tvlens eval``: ICL accuracy per task."""

    kind: ClassVar[str] = EVAL
    minimum: ClassVar[dict[str, int]] = {"k": 0, "n_prompts": 1, "batch_size": 1}
    k: int = 5
    n_prompts: int = 64
    template: Literal["arrow", "qa"] = "arrow"
    seed: int = 0
    batch_size: int = 64


@no_type_check
@dataclass(frozen=True)
class VectorsConfig(AnalysisConfig):
    """``tvlens vectors``: task vectors (Hendel) and/or function vectors (Todd)."""

    kind: ClassVar[str] = VECTORS
    minimum: ClassVar[dict[str, int]] = {
        "k": 1,
        "n_extract": 1,
        "top_k_heads": 1,
        "max_batch": 1,
    }
    # an extraction method (tvlens.extraction.registry), or "both": every registered one
    method: str = field(default="hendel", metadata={"choices": extraction_choices})
    k: int | None = None  # default: the model's training k
    n_extract: int = 32
    top_k_heads: int = 10
    fv_scale: float = 1.0
    split: tuple[float, float, float] = (0.5, 0.2, 0.3)
    seed: int = 0
    template: Literal["arrow", "qa"] | None = None
    max_batch: int = 1024

    def __post_init__(self) -> None:
        if self.template is not None and self.template not in ("arrow", "qa"):
            raise ConfigError(f"Unknown template {self.template!r}: use arrow or qa.")
        object.__setattr__(self, "split", tuple(self.split))
        super().__post_init__()
        for m in self.methods:
            low = get_extraction_method(m).min_k
            if self.k is not None and self.k < low:
                raise ConfigError(
                    f"k (--k) must be >= {low} for {m} (a function vector's corrupted prompts "
                    f"shuffle the demonstrations' labels), got {self.k}."
                )

    @property
    def methods(self) -> tuple[str, ...]:
        return expand_methods(self.method)


@no_type_check
@dataclass(frozen=True)
class PatchConfig(AnalysisConfig):
    """``tvlens patch``: activation patching of every component."""

    kind: ClassVar[str] = PATCH
    # k >= 2: the corrupted prompts shuffle the demonstrations' labels.
    minimum: ClassVar[dict[str, int]] = {"k": 2, "n_prompts": 1, "max_batch": 1}
    component: Literal["resid", "attn", "mlp", "heads"] = "heads"
    method: Literal["exact", "attribution", "both"] = "exact"
    positions: Literal["all", "each", "last"] = "all"
    corruption: Literal["shuffled", "mean", "zero"] = "shuffled"
    head_act: Literal["z", "q", "k", "v"] = "z"
    k: int | None = None  # default: the model's training k
    n_prompts: int = 16
    tasks: tuple[str, ...] | None = None
    seed: int = 0
    max_batch: int = 1024

    def __post_init__(self) -> None:
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
        super().__post_init__()


@no_type_check
@dataclass(frozen=True)
class ProbeConfig(AnalysisConfig):
    """``tvlens probe``: task decodability at every layer of every checkpoint."""

    kind: ClassVar[str] = PROBE
    minimum: ClassVar[dict[str, int]] = {"k": 1, "n_prompts": 2}
    revisions: tuple[str, ...] | None = None  # default: every checkpoint of a tvlens run
    k: int | None = None
    n_prompts: int = 100
    probe: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.revisions is not None:
            object.__setattr__(self, "revisions", tuple(str(r) for r in self.revisions))
        super().__post_init__()


@no_type_check
@dataclass(frozen=True)
class EmergenceConfig(AnalysisConfig):
    """``tvlens emergence``: task encoding and decoding over a run, and the perturbation test."""

    kind: ClassVar[str] = EMERGENCE
    minimum: ClassVar[dict[str, int]] = {"n_prompts": 2, "perturb_prompts": 1}
    revisions: tuple[str, ...] | None = None
    n_prompts: int = 100
    seed: int = 0
    perturb_layer: int | None = None  # default: the middle layer; negative: skip the test
    perturb_mode: Literal["shift", "replace"] = "shift"
    perturb_prompts: int = 64
    perturb_steps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("revisions", "perturb_steps"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        super().__post_init__()
