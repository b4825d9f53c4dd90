"""Training configurations and presets for tvlens's own ICL models."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from tvlens.errors import TVLensError
from tvlens.models.archs import ARCHITECTURES
from tvlens.runs.config import Config, opt

C = TypeVar("C")


def pick_preset(presets: Mapping[str, C], name: str, kind: str = "") -> C:
    """``presets[name]``, or :class:`TVLensError` naming the presets there are (``kind``: the
    run kind, e.g. ``"ATV "``, as the message names it)."""
    if name not in presets:
        raise TVLensError(f"Unknown {kind}preset {name!r}; use one of {sorted(presets)}.")
    return presets[name]


OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("constant", "linear", "cosine")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass(frozen=True)
class TrainingConfig(Config):
    """The options every training run shares, read by :func:`tvlens.training.engine.train_run`.
    A run kind's configuration subclasses it (and may change the defaults).

    ``steps`` is the number of optimizer steps (with :class:`~tvlens.training.engine.EpochData`
    the engine derives it from the epochs instead); ``batch_size`` is the rows of one
    micro-batch, ``grad_accum`` micro-batches make one step. Checkpoints: ``n_checkpoints``
    log-spaced steps from ``first_checkpoint`` (Pythia-like), or one per epoch.
    """

    _kind: ClassVar[str] = "training"  # names the options in errors

    steps: int = opt(1000, "Optimizer steps.")
    batch_size: int = opt(64, "Rows per micro-batch.")
    lr: float = opt(1e-3, "Learning rate.")
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off
    seed: int = opt(0, "Seed of the weights and the data.")
    n_checkpoints: int = 24
    first_checkpoint: int = 10
    eval_prompts: int = 64
    log_every: int = 10
    # engine options (absent from config.json at their defaults)
    grad_accum: int = opt(1, "Micro-batches per optimizer step.")
    optimizer: str = "adamw"  # "adamw" (decoupled weight decay) or "adam" (L2 in the gradient)
    schedule: str = "constant"  # after the linear warm-up: constant, or linear / cosine decay to 0
    mixed_precision: str = "no"  # "bf16" / "fp16" autocast on a GPU; ignored on CPU

    _omit_at_default = ("grad_accum", "optimizer", "schedule", "mixed_precision")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_at_least(1, "steps")
        self.check_at_least(1, "batch_size", "grad_accum")
        self.check_choice("optimizer", OPTIMIZERS)
        self.check_choice("schedule", SCHEDULES)
        self.check_choice("mixed_precision", MIXED_PRECISION)


@dataclass(frozen=True)
class TrainConfig(TrainingConfig):
    """Everything that determines a synthetic training run (saved as ``config.json``).

    The model is an HF causal LM (``arch``) trained from scratch on ICL prompts of the task
    suite ``suite`` (a :func:`tvlens.tasks.get_suite` spec), with the loss on every answer
    token (the demonstrations' and the query's).
    """

    # model
    arch: str = opt("gpt2", "Architecture of the new model (tvlens.models.ARCHITECTURES).")
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_mlp: int | None = 256
    n_ctx: int = 64
    # data
    suite: dict | str = opt(
        help='Suite name, or its spec as JSON, e.g. \'{"name": "bitwise", "n_bits": 3}\'.',
        factory=lambda: {"name": "latent", "n_tasks": 8, "n_symbols": 32, "seed": 0},
        spec=True,
    )
    k: int = 5
    template: str = "arrow"
    # optimisation: the shared fields of TrainingConfig, with these defaults
    steps: int = opt(1400, "Optimizer steps.")
    batch_size: int = 128
    weight_decay: float = 0.01
    warmup_steps: int = 50
    # Task-vector prompting loss (Yang et al. 2025, "Task vectors in in-context learning:
    # emergence, formation, and benefits"): the residual after block ``tv_loss_layer`` at the
    # query of each ICL prompt is written into the zero-shot prompt of the same query, whose
    # answer is then also trained (weight ``tv_loss_weight``). 0 turns it off.
    tv_loss_weight: float = opt(0.0, "Weight of the task-vector prompting loss (0: off).")
    tv_loss_layer: int | None = opt(
        None, "Block whose output carries the task vector for that loss (default: the middle)."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tv_loss_layer is not None and not 0 <= self.tv_loss_layer < self.n_layers - 1:
            raise TVLensError(
                f"tv_loss_layer must be in 0..{self.n_layers - 2} (a block before the last), "
                f"got {self.tv_loss_layer}."
            )
        self.check_at_least(1, "k", why=" for ICL training")

        if self.arch not in ARCHITECTURES:
            raise TVLensError(
                f"Unknown architecture {self.arch!r}: use one of {', '.join(ARCHITECTURES)}."
            )


# The preset a run uses when none is named (the CPU demo's).
DEFAULT_PRESET = "default"
PRESETS: dict[str, TrainConfig] = {
    # Seconds on a laptop CPU: for tests and the tiny notebook run.
    "tiny": TrainConfig(
        n_layers=2,
        d_model=64,
        n_heads=4,
        d_mlp=128,
        n_ctx=32,
        suite={"name": "latent", "n_tasks": 4, "n_symbols": 8, "seed": 0},
        k=4,
        steps=450,
        batch_size=64,
        lr=2e-3,
        warmup_steps=10,
        n_checkpoints=6,
        first_checkpoint=10,
        eval_prompts=16,
        log_every=10,
    ),
    # 4 layers, d_model 128, 8 latent tasks of 32 symbols, k=5, next-token loss only: sharp
    # ICL emergence in ~2 min on 2 CPU cores, but no Hendel-style task vector (mean vectors
    # recover 3% of ICL accuracy at their best layer).
    "plain": TrainConfig(),
    # The embedded default: the same model and tasks, plus the task-vector prompting loss at
    # block 1 with dummy queries. ICL emerges as sharply (step ~1100) and the mean residual
    # after block 1 becomes a task vector (Hendel recovery 100% at step ~1800).
    "default": TrainConfig(steps=1800, tv_loss_weight=0.5, tv_loss_layer=1),
    # A larger model, 32 tasks of 64 symbols, 8 demonstrations: for a GPU.
    "gpu": TrainConfig(
        n_layers=8,
        d_model=256,
        n_heads=8,
        n_ctx=128,
        suite={"name": "latent", "n_tasks": 32, "n_symbols": 64, "seed": 0},
        k=8,
        steps=6000,
        batch_size=256,
        lr=5e-4,
        warmup_steps=200,
        n_checkpoints=30,
        eval_prompts=128,
    ),
}


def get_preset(name: str) -> TrainConfig:
    return pick_preset(PRESETS, name)


def checkpoint_steps(cfg: Any) -> list[int]:
    """Log-spaced steps from ``first_checkpoint`` to ``steps`` (always included), like
    Pythia's early checkpoints: dense where learning is fast. ``cfg``: a :class:`TrainConfig`
    or any config with those fields (the regression family's ``RegressionConfig``)."""
    import numpy as np

    first = min(cfg.first_checkpoint, cfg.steps)
    n = max(cfg.n_checkpoints, 1)
    raw = np.geomspace(first, cfg.steps, n) if n > 1 else np.array([cfg.steps])
    return sorted({int(round(s)) for s in raw} | {cfg.steps})


def resolve_config(config: Any, preset: str, get_preset: Any, overrides: dict[str, Any]):
    """A run's configuration, ``config`` or the preset named ``preset`` with ``overrides``
    applied, and the preset name recorded in ``config.json`` (None for a given config)."""
    cfg = (config or get_preset(preset)).with_overrides(**overrides)
    return cfg, (None if config is not None else preset)
