"""The settings of each family of comparison methods: one small frozen dataclass per family,
owned by its method classes (``SteeringMethod.options_class``, read as ``self.options``) and
held by :class:`~tvlens.compare.config.CompareConfig` as one block each: ``cfg.vector``
(:class:`VectorOptions`: task / function vectors, retrieval and every extraction method's
fixed-vector baseline, in :mod:`tvlens.compare.baselines`), ``cfg.peft``
(:class:`PeftOptions`: LoRA and prefix tuning, :mod:`tvlens.compare.tuned`) and ``cfg.atv``
(:class:`ATVOptions`: ATV, :mod:`tvlens.compare.tuned`). ``DIR/config.json`` writes them as
``{"vector": {...}, "peft": {...}, "atv": {...}}``.

The classes sit in this module, not beside their methods, because they import no torch: the
CLI reads the comparison's configuration at start-up (``tvlens --help`` stays fast). Each says
what its fields were called when ``CompareConfig`` had one flat list of fields (``flat``), so
that comparisons saved with flat keys resume (:meth:`CompareConfig.upgrade
<tvlens.compare.config.CompareConfig.upgrade>`) and ``with_overrides(lora_rank=4)`` still
works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

from tvlens.errors import ConfigError
from tvlens.extraction.methods import FunctionVector
from tvlens.runs.config import method_opt, opt, without_defaults


@dataclass(frozen=True)
class MethodOptions:
    """The base of a family's options: ``family`` is its block's name in ``CompareConfig``,
    ``flat`` maps the old flat field names to its fields."""

    family: ClassVar[str] = ""
    flat: ClassVar[dict[str, str]] = {}
    # Fields left out of config.json while at their default (added after comparisons were
    # saved without them: those still resume).
    omit_at_default: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def make(cls, value: Any) -> MethodOptions:
        """The block from ``value``: an object of this class (as it is) or a dict of its
        fields (the JSON of ``config.json``; the others at their defaults)."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{cls.family} must be a {cls.__name__} or a dict of its fields, got "
                f"{type(value).__name__}."
            )
        cls.check_names(value)
        return cls(**value)

    @classmethod
    def check_names(cls, values: Mapping[str, Any]) -> None:
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"{cls.family} has no option {unknown}; its options are {cls.field_names()}."
            )

    def updated(self, values: Mapping[str, Any]) -> MethodOptions:
        """A copy with ``values`` (field names) replaced."""
        self.check_names(values)
        return replace(self, **values)

    def saved(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` (this block as a dict) without the fields at their omitted defaults."""
        return without_defaults(self, values, self.omit_at_default)


@dataclass(frozen=True)
class VectorOptions(MethodOptions):
    """The fixed-vector baselines' settings: task vectors (Hendel et al. 2023), function
    vectors (Todd et al. 2023), retrieval (its library is task vectors) and every other
    registered extraction method's baseline (``vector:<name>``). All read the task's
    demonstrations."""

    family: ClassVar[str] = "vector"
    flat: ClassVar[dict[str, str]] = {
        "tv_k": "k", "n_extract": "n_extract", "top_k_heads": "top_k_heads",
        "fv_aie_tasks": "aie_tasks", "fv_aie_prompts": "aie_prompts",
        "sweep_layers": "sweep_layers", "retrieval_layer": "retrieval_layer",
        "retrieval_k": "retrieval_k",
    }  # fmt: skip

    k: int = opt(5, "Demonstrations per extraction prompt (was tv_k).")
    n_extract: int = opt(16, "Prompts per task a vector is extracted from.")
    top_k_heads: int = method_opt(FunctionVector, "top_k_heads")  # the method's default
    aie_tasks: int = opt(4, "In-domain tasks whose mean AIE ranks the function vector's heads.")
    aie_prompts: int = opt(16, "Prompts per task of that AIE.")
    sweep_layers: list | None = opt(None, "Layers tried on dev (None: every layer).")
    retrieval_layer: int | None = opt(
        None, "Layer of retrieval's query representation (None: the middle layer)."
    )
    retrieval_k: int = opt(5, "Nearest stored queries that vote for a task (retrieval).")


@dataclass(frozen=True)
class PeftOptions(MethodOptions):
    """LoRA's and prefix tuning's settings (peft, on the plain HF model)."""

    family: ClassVar[str] = "peft"
    flat: ClassVar[dict[str, str]] = {
        "peft_lrs": "lrs", "lora_rank": "lora_rank", "lora_alpha_ratio": "lora_alpha_ratio",
        "prefix_tokens": "prefix_tokens",
    }  # fmt: skip

    lrs: list = opt(help="Learning rates swept (LoRA, prefix).", factory=lambda: [3e-4, 1e-3, 3e-3])
    lora_rank: int = opt(8, "LoRA's rank.")
    lora_alpha_ratio: float = opt(2.0, "LoRA's alpha / rank.")
    prefix_tokens: int = opt(10, "Virtual tokens of prefix tuning.")

    def __post_init__(self) -> None:
        if not self.lrs:
            raise ConfigError("peft.lrs (peft_lrs) needs at least one learning rate.")


@dataclass(frozen=True)
class ATVOptions(MethodOptions):
    """ATV's settings (Kang et al. 2025; official code: λ 0.001, lr 5e-4, weight decay 1e-5)."""

    family: ClassVar[str] = "atv"
    flat: ClassVar[dict[str, str]] = {
        "atv_generator": "generator", "atv_generator_stop_at_layer": "generator_stop_at_layer",
        "atv_scale": "scale", "atv_scales": "scales", "atv_lrs": "lrs",
        "atv_generator_lr_ratio": "generator_lr_ratio", "atv_weight_decay": "weight_decay",
        "atv_positions": "positions",
    }  # fmt: skip
    omit_at_default: ClassVar[tuple[str, ...]] = ("generator_input",)

    generator: str | None = opt(None, "The generator LM (None: a separate copy of the target).")
    generator_stop_at_layer: int | None = opt(None, "Use only the generator's first N blocks.")
    scale: float = opt(1e-3, "λ (the variant used without a sweep, and the swept rates' λ).")
    scales: list = opt(help="λ values tried.", factory=lambda: [1e-3, 1e-2, 1e-1])
    lrs: list = opt(
        help="Learning rates of the expansion swept.", factory=lambda: [2e-4, 5e-4, 2e-3]
    )
    generator_lr_ratio: float = opt(1.0, "The generator LM's lr / the expansion's (official: 1).")
    weight_decay: float = opt(1e-5, "ATV's weight decay.")
    positions: str = opt("all", "Where the vectors are added: all or last.")
    # The official training script's generator reads "Q: {input} \n A: " only, while the
    # target reads the instructed prompt (Kang et al. 2025; the paper-faithful arm).
    generator_input: str = opt(
        "instructed", "What the generator reads: instructed (the target's prompt) or query."
    )

    def __post_init__(self) -> None:
        if self.generator_input not in ("instructed", "query"):
            raise ConfigError(
                "atv.generator_input must be 'instructed' or 'query', got "
                f"{self.generator_input!r}."
            )
        if not self.lrs or self.scale not in self.scales:
            raise ConfigError(
                "atv.lrs (atv_lrs) needs at least one learning rate, and atv.scales (atv_scales) "
                f"must hold atv.scale ({self.scale})."
            )


# Every family's block, by its name in CompareConfig.
OPTIONS: dict[str, type[MethodOptions]] = {
    c.family: c for c in (VectorOptions, PeftOptions, ATVOptions)
}
# An old flat CompareConfig field -> (its block, its field there).
FLAT: dict[str, tuple[str, str]] = {
    old: (c.family, new) for c in OPTIONS.values() for old, new in c.flat.items()
}
