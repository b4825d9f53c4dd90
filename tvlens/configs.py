"""One configuration dataclass per kind of analysis run: the library's run functions take it,
the CLI fills it, and the run writes it (``to_dict``) into its ``config.json``.

Choices are ``Literal`` fields and counts have lower bounds, both checked once, when the
config is made (:class:`~tvlens.errors.ConfigError` naming the field and what it accepts),
so that nothing deeper has to check them again; every field carries its help
(:func:`~tvlens.runs.config.opt`). The CLI builds its options from these fields: type,
default, choices and help (``tvlens.cli.options``). The training runs have theirs in
:mod:`tvlens.training` (``TrainConfig``, ``RegressionConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

from tvlens.errors import ConfigError
from tvlens.extraction.methods import FunctionVector, method_name
from tvlens.extraction.registry import (
    DEFAULT_METHOD,
    expand_methods,
    extraction_choices,
    get_extraction_method,
)
from tvlens.runs import EMERGENCE, EVAL, PATCH, PROBE, VECTORS
from tvlens.runs.config import MAX_BATCH, Config, choices, method_opt, opt

__all__ = ["Config", "EmergenceConfig", "EvalConfig", "PatchConfig", "ProbeConfig",
           "VectorsConfig", "choices", "opt"]  # fmt: skip


def no_type_check(cls: type) -> type:
    """Marks a config class for jaxtyping's import hook (which skips what is decorated with a
    ``no_type_check``), so that the test suite's runtime type checker does not reject a bad
    choice with its own error before ``__post_init__`` raises the :class:`ConfigError` users
    see. Unlike ``typing.no_type_check`` it leaves ``get_type_hints`` working."""
    return cls


@no_type_check
@dataclass(frozen=True)
class EvalConfig(Config):
    """ICL accuracy (first token and exact match) per task (``tvlens eval``)."""

    kind: ClassVar[str] = EVAL
    minimum: ClassVar[dict[str, int]] = {"k": 0, "n_prompts": 1, "batch_size": 1}
    k: int = opt(5, "Demonstrations per prompt.")
    n_prompts: int = opt(64, "Prompts per task.")
    template: Literal["arrow", "qa"] = opt("arrow", "Prompt template.")
    seed: int = opt(0, "Seed of the prompts.")
    batch_size: int = opt(64, "Prompts per forward pass.")


@no_type_check
@dataclass(frozen=True)
class VectorsConfig(Config):
    """Extract task vectors (Hendel) or function vectors (Todd), sweep layers, and report
    zero-shot / ICL / vector accuracy on held-out queries (``tvlens vectors``)."""

    kind: ClassVar[str] = VECTORS
    minimum: ClassVar[dict[str, int]] = {
        "k": 1,
        "n_extract": 1,
        "top_k_heads": 1,
        "max_batch": 1,
    }
    renamed_fields: ClassVar[dict[str, str]] = {"method": "methods"}
    # names (checked against the registry) or method objects (checked by expand_methods)
    methods: tuple[Any, ...] = opt(
        (DEFAULT_METHOD,), "Which vectors: extraction methods, comma-separated, or all.",
        choices=extraction_choices, sep=",", alias="--method", objects=True,
    )  # fmt: skip
    k: int | None = opt(None, "Demonstrations (default: the model's training k).")
    n_extract: int = opt(32, "Prompts to extract each vector from.")
    # The function vector's options: their defaults and help are the method's own.
    top_k_heads: int = method_opt(FunctionVector, "top_k_heads")
    fv_scale: float = method_opt(FunctionVector, "scale")
    split: tuple[float, float, float] = opt(
        (0.5, 0.2, 0.3), "Shares of each task's examples: extraction, layer choice, test.", sep=","
    )
    seed: int = opt(0, "Seed of the prompts and splits.")
    template: Literal["arrow", "qa"] | None = opt(None, "Prompt template (default: the model's).")
    max_batch: int = opt(MAX_BATCH, "Rows per forward pass.")
    # Any method's own options (its dataclass fields), by method name: a new method's options
    # reach `tvlens vectors` with no edit here.
    method_options: dict = opt(
        factory=dict, help='Methods\' own options, as JSON: {"fv": {"top_k_heads": 4}}.'
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", tuple(self.split))
        object.__setattr__(self, "methods", expand_methods(self.methods))
        for name, given in self.method_options.items():
            cls = get_extraction_method(name)
            unknown = sorted(set(given) - set(cls.option_fields()))
            if unknown:
                raise ConfigError(
                    f"method_options: {name} has no option {unknown}; its options are "
                    f"{sorted(cls.option_fields())}."
                )
        if len(self.split) != 3 or min(self.split) <= 0 or sum(self.split) > 1 + 1e-9:
            raise ConfigError(
                f"split must be three positive fractions summing to at most 1 (extraction, "
                f"layer choice, test), got {self.split}."
            )
        super().__post_init__()
        for m in self.methods:
            low = (get_extraction_method(m) if isinstance(m, str) else m).min_k
            if self.k is not None and self.k < low:
                raise ConfigError(
                    f"k (--k) must be >= {low} for {method_name(m)} (a function vector's "
                    f"corrupted prompts shuffle the demonstrations' labels), got {self.k}."
                )

    def method_objects(self) -> tuple[Any, ...]:
        """The methods as objects: a name becomes its class with the options this config
        sets (e.g. ``top_k_heads``, ``fv_scale``, and ``method_options[name]``); an object is
        used as given."""
        return tuple(
            get_extraction_method(m).from_config(self, **self.method_options.get(m, {}))
            if isinstance(m, str)
            else m
            for m in self.methods
        )

    def method_names(self) -> tuple[str, ...]:
        return tuple(method_name(m) for m in self.methods)

    def _as_dict(self) -> dict[str, Any]:
        # A method object is written by name (its options go into the report's config).
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**d, "methods": list(self.method_names())}


@no_type_check
@dataclass(frozen=True)
class PatchConfig(Config):
    """Activation patching (exact, or attribution patching) of every component, with a
    heatmap (``tvlens patch``)."""

    kind: ClassVar[str] = PATCH
    # k >= 2: the corrupted prompts shuffle the demonstrations' labels.
    minimum: ClassVar[dict[str, int]] = {"k": 2, "n_prompts": 1, "max_batch": 1}
    component: Literal["resid", "attn", "mlp", "heads"] = opt("heads", "What to patch.")
    method: Literal["exact", "attribution", "both"] = opt("exact", "Exact or attribution.")
    positions: Literal["all", "each", "last"] = opt(
        "all", "all (at once), each (one by one) or last."
    )
    corruption: Literal["shuffled", "mean", "zero"] = opt(
        "shuffled", "shuffled (labels), mean or zero (ablation)."
    )
    head_act: Literal["z", "q", "k", "v"] = opt("z", "For heads: which activation.")
    k: int | None = opt(None, "Demonstrations (default: the model's training k).")
    n_prompts: int = opt(16, "Prompts per task.")
    tasks: tuple[str, ...] | None = opt(None, "Only this task (repeat for several).", flag="--task")
    seed: int = opt(0, "Seed of the prompts.")
    max_batch: int = opt(MAX_BATCH, "Rows (prompts x copies) per pass.")

    def __post_init__(self) -> None:
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
        super().__post_init__()


@no_type_check
@dataclass(frozen=True)
class ProbeConfig(Config):
    """Task decodability (leave-one-out 10-NN, Null task included) at every layer of every
    checkpoint, against ICL accuracy (``tvlens probe``)."""

    kind: ClassVar[str] = PROBE
    minimum: ClassVar[dict[str, int]] = {"k": 1, "n_prompts": 2}
    revisions: tuple[str, ...] | None = opt(
        None, "A checkpoint to probe (repeat; default: every checkpoint of a tvlens run, "
        "or the model as it is).", flag="--revision",
    )  # fmt: skip
    k: int | None = opt(None, "Demonstrations (default: the model's training k).")
    n_prompts: int = opt(100, "Prompts per task.")
    probe: bool = opt(False, "Also a linear probe per layer.", flag="--linear-probe")
    seed: int = opt(0, "Seed of the prompts.")

    def __post_init__(self) -> None:
        if self.revisions is not None:
            object.__setattr__(self, "revisions", tuple(str(r) for r in self.revisions))
        super().__post_init__()


@no_type_check
@dataclass(frozen=True)
class EmergenceConfig(Config):
    """Task encoding (TD per task, every layer) and decoding (loss) over a run's checkpoints,
    and the mean-state perturbation test at an early and the last checkpoint
    (``tvlens emergence``)."""

    kind: ClassVar[str] = EMERGENCE
    minimum: ClassVar[dict[str, int]] = {"n_prompts": 2, "perturb_prompts": 1}
    revisions: tuple[str, ...] | None = opt(
        None, "A checkpoint (repeat; default: every checkpoint of the run).", flag="--revision"
    )
    n_prompts: int = opt(100, "Prompts per task.")
    seed: int = opt(0, "Seed of the prompts.")
    perturb_layer: int | None = opt(
        None, "Layer of the perturbation test (-1: skip; default: middle)."
    )
    perturb_mode: Literal["shift", "replace"] = opt("shift", "Perturbation.")
    perturb_prompts: int = opt(64, "Prompts of the perturbation test.")
    perturb_steps: tuple[int, ...] | None = opt(
        None, "Checkpoint steps of the perturbation test (repeat; default: an early and the "
        "last).", flag="--perturb-step",
    )  # fmt: skip

    def __post_init__(self) -> None:
        for name in ("revisions", "perturb_steps"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        super().__post_init__()
