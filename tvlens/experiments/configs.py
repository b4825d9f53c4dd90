"""The pretrained-model experiments' configurations (``tvlens pretrained ...``): each
experiment function takes one (``config=``, or its fields as keyword arguments) and the CLI
builds its options from the fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from tvlens.configs import no_type_check
from tvlens.errors import ConfigError
from tvlens.extraction.registry import ALL, expand_methods, extraction_choices
from tvlens.runs.config import Config, opt

_K = "Demonstrations per prompt."
_SEED = "Seed of the prompts and splits."
_TEMPLATE = "Prompt template (default: the model's)."


@no_type_check
@dataclass(frozen=True)
class VectorTableConfig(Config):
    """:func:`tvlens.experiments.vector_table`: Hendel et al.'s Table 1."""

    _kind: ClassVar[str] = "vector table"
    minimum: ClassVar[dict[str, int]] = {"k": 1, "n_extract": 1, "top_k_heads": 1}
    renamed_fields: ClassVar[dict[str, str]] = {"method": "methods"}
    methods: tuple[str, ...] = opt(
        (ALL,), "Which vectors: extraction methods, comma-separated, or all.",
        choices=extraction_choices, sep=",", alias="--method",
    )  # fmt: skip
    k: int = opt(5, _K)
    n_extract: int = opt(32, "Prompts per vector.")
    top_k_heads: int = opt(10, "Heads in a function vector.")
    seed: int = opt(0, _SEED)
    template: str | None = opt(None, _TEMPLATE)
    split: tuple[float, float, float] = opt(
        (0.5, 0.2, 0.3), "train,dev,test fractions of each task.", sep=","
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", tuple(self.split))
        object.__setattr__(self, "methods", expand_methods(self.methods))
        if len(self.split) != 3 or min(self.split) <= 0 or sum(self.split) > 1 + 1e-9:
            raise ConfigError(
                f"split must be three positive fractions summing to at most 1 (train, dev, "
                f"test), got {self.split}."
            )
        super().__post_init__()


@no_type_check
@dataclass(frozen=True)
class DecodabilityConfig(Config):
    """:func:`tvlens.experiments.task_decodability_table`."""

    _kind: ClassVar[str] = "decodability"
    minimum: ClassVar[dict[str, int]] = {"k": 1, "n_prompts": 2, "knn_k": 1, "batch_size": 1}
    k: int = opt(5, _K)
    n_prompts: int = opt(40, "Prompts per task.")
    seed: int = opt(0, _SEED)
    template: str | None = opt(None, _TEMPLATE)
    knn_k: int = opt(10, "Neighbours of the leave-one-out k-NN.")
    batch_size: int = opt(16, "Prompts per forward pass.")


@no_type_check
@dataclass(frozen=True)
class HeadsConfig(Config):
    """:func:`tvlens.experiments.head_comparison`."""

    _kind: ClassVar[str] = "heads"
    minimum: ClassVar[dict[str, int]] = {"k": 2, "n_prompts": 1, "n_extract": 1, "top": 1}
    k: int = opt(5, _K)
    n_prompts: int = opt(16, "Patching prompts per task.")
    n_extract: int = opt(32, "Prompts of the function vector's mean head outputs.")
    top: int = opt(10, "Top heads compared.")
    seed: int = opt(0, _SEED)
    template: str | None = opt(None, _TEMPLATE)


@no_type_check
@dataclass(frozen=True)
class LayerFinetuneConfig(Config):
    """:func:`tvlens.experiments.pretrained.layer_finetuning`."""

    _kind: ClassVar[str] = "fine-tuning"
    minimum: ClassVar[dict[str, int]] = {"k_layers": 1, "steps": 1, "batch_size": 1, "k": 1,
                                         "n_prompts": 2}  # fmt: skip
    k_layers: int = opt(5, "Blocks tuned (first k, then last k).")
    method: Literal["lora", "full"] = opt("lora", "LoRA or full fine-tuning of those blocks.")
    steps: int = opt(60, "Training steps of each fine-tuning.")
    lr: float = opt(1e-3, "Learning rate.")
    batch_size: int = opt(8, "Prompts per step.")
    k: int = opt(5, _K)
    n_prompts: int = opt(40, "Held-out prompts per task for TD.")
    train_fraction: float = opt(0.5, "Share of each task's pairs trained on (the rest: TD).")
    seed: int = opt(0, _SEED)

    def __post_init__(self) -> None:
        if not 0 < self.train_fraction < 1:
            raise ConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction}.")
        super().__post_init__()
