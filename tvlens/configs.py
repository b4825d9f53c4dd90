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

from dataclasses import dataclass
from typing import ClassVar, Literal

from tvlens.errors import ConfigError
from tvlens.extraction.registry import (
    DEFAULT_METHOD,
    expand_methods,
    extraction_choices,
    get_extraction_method,
)
from tvlens.runs import EMERGENCE, EVAL, PATCH, PROBE, VECTORS
from tvlens.runs.config import Config, choices, opt

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
    methods: tuple[str, ...] = opt(
        (DEFAULT_METHOD,), "Which vectors: extraction methods, comma-separated, or all.",
        choices=extraction_choices, sep=",", alias="--method",
    )  # fmt: skip
    k: int | None = opt(None, "Demonstrations (default: the model's training k).")
    n_extract: int = opt(32, "Prompts to extract each vector from.")
    top_k_heads: int = opt(10, "Heads in a function vector.")
    fv_scale: float = opt(1.0, "Scale of the added function vector.")
    split: tuple[float, float, float] = opt(
        (0.5, 0.2, 0.3), "Shares of each task's examples: extraction, layer choice, test.", sep=","
    )
    seed: int = opt(0, "Seed of the prompts and splits.")
    template: Literal["arrow", "qa"] | None = opt(None, "Prompt template (default: the model's).")
    max_batch: int = opt(1024, "Rows per forward pass.")
    answer_token: Literal["only", "first"] = opt(
        "only", "Answers of several tokens: only (refuse them) or first (score their first "
        "token, as Hendel et al. and Todd et al. do)."
    )  # fmt: skip

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", tuple(self.split))
        object.__setattr__(self, "methods", expand_methods(self.methods))
        if len(self.split) != 3 or min(self.split) <= 0 or sum(self.split) > 1 + 1e-9:
            raise ConfigError(
                f"split must be three positive fractions summing to at most 1 (extraction, "
                f"layer choice, test), got {self.split}."
            )
        super().__post_init__()
        for m in self.methods:
            low = get_extraction_method(m).min_k
            if self.k is not None and self.k < low:
                raise ConfigError(
                    f"k (--k) must be >= {low} for {m} (a function vector's corrupted prompts "
                    f"shuffle the demonstrations' labels), got {self.k}."
                )


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
    max_batch: int = opt(1024, "Rows (prompts x copies) per pass.")

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
