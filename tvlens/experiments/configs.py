"""The pretrained-model experiments' configurations (``tvlens pretrained ...``): each
experiment function takes one (``config=``, or its fields as keyword arguments) and the CLI
builds its options from the fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from tvlens.errors import ConfigError
from tvlens.extraction.config import VectorsConfig
from tvlens.extraction.methods import FunctionVector, HendelTaskVector
from tvlens.probing.config import KNN_K
from tvlens.runs.config import Config, no_type_check, opt, redefault

_K = "Demonstrations per prompt."
_SEED = "Seed of the prompts and splits."
_TEMPLATE = "Prompt template (default: the model's)."


@no_type_check
@dataclass(frozen=True)
class VectorTableConfig(VectorsConfig):
    """Zero-shot, ICL, task vector and function vector accuracy per task (Hendel et al.'s
    Table 1), with the layer curves (:func:`tvlens.experiments.vector_table`). The fields of
    ``tvlens vectors``, with the task and function vectors (Table 1's two; ``methods="all"``
    adds ICV, I2CL, state vectors and LTV, which calibrate or train per task) and 5
    demonstrations by default, and any prompt template the model knows."""

    kind: ClassVar[str | None] = None  # vector_table writes its own JSON
    _kind: ClassVar[str] = "vector table"
    methods: tuple[str, ...] = redefault(
        VectorsConfig, "methods", (HendelTaskVector.name, FunctionVector.name)
    )
    k: int = redefault(VectorsConfig, "k", 5, _K)
    template: str | None = redefault(VectorsConfig, "template", None)


@no_type_check
@dataclass(frozen=True)
class DecodabilityConfig(Config):
    """Task decodability by layer (Null task included) and TD against ICL accuracy (R²)
    (:func:`tvlens.experiments.task_decodability_table`)."""

    _kind: ClassVar[str] = "decodability"
    minimum: ClassVar[dict[str, int]] = {"k": 1, "n_prompts": 2, "knn_k": 1, "batch_size": 1}
    k: int = opt(5, _K)
    n_prompts: int = opt(40, "Prompts per task.")
    seed: int = opt(0, _SEED)
    template: str | None = opt(None, _TEMPLATE)
    knn_k: int = opt(KNN_K, "Neighbours of the leave-one-out k-NN.")
    batch_size: int = opt(16, "Prompts per forward pass.")


@no_type_check
@dataclass(frozen=True)
class HeadsConfig(Config):
    """Exact and attribution head patching against the function-vector AIE ranking
    (:func:`tvlens.experiments.head_comparison`)."""

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
    """Early- against late-layer fine-tuning, TD before and after (Han et al., Table 1;
    :func:`tvlens.experiments.layer_finetuning`)."""

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
