"""Training configurations and presets for tvlens's own ICL models."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from tvlens.errors import TVLensError


class RunConfig:
    """What every run configuration shares: overrides by field name, and the JSON form
    written to ``config.json``."""

    _kind = "training"  # names the options in errors
    # Fields left out of ``config.json`` while at their default (the engine's options added
    # after runs were saved without them: those runs still compare equal and resume).
    _omit_at_default: tuple[str, ...] = ()

    def with_overrides(self, **overrides: Any):
        names = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TVLensError(f"Unknown {self._kind} option(s) {unknown}; valid: {sorted(names)}.")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict:
        """As written to ``config.json`` (JSON types: tuples become lists), so that it
        compares equal to a run's saved config."""
        d = json.loads(json.dumps(asdict(self)))
        defaults = {f.name: f.default for f in fields(self)}
        for name in self._omit_at_default:
            if name in d and d[name] == defaults[name]:
                del d[name]
        return d


OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("constant", "linear", "cosine")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass(frozen=True)
class TrainingConfig(RunConfig):
    """The options every training run shares, read by :func:`tvlens.training.engine.train_run`.
    A run kind's configuration subclasses it (and may change the defaults).

    ``steps`` is the number of optimizer steps (with :class:`~tvlens.training.engine.EpochData`
    the engine derives it from the epochs instead); ``batch_size`` is the rows of one
    micro-batch, ``grad_accum`` micro-batches make one step. Checkpoints: ``n_checkpoints``
    log-spaced steps from ``first_checkpoint`` (Pythia-like), or one per epoch.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off
    seed: int = 0
    n_checkpoints: int = 24
    first_checkpoint: int = 10
    eval_prompts: int = 64
    log_every: int = 10
    # engine options (absent from config.json at their defaults)
    grad_accum: int = 1
    optimizer: str = "adamw"  # "adamw" (decoupled weight decay) or "adam" (L2 in the gradient)
    schedule: str = "constant"  # after the linear warm-up: constant, or linear / cosine decay to 0
    mixed_precision: str = "no"  # "bf16" / "fp16" autocast on a GPU; ignored on CPU

    _omit_at_default = ("grad_accum", "optimizer", "schedule", "mixed_precision")

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise TVLensError(f"steps must be >= 1, got {self.steps}.")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise TVLensError(
                f"batch_size and grad_accum must be >= 1, got {self.batch_size}, {self.grad_accum}."
            )
        for name, value, valid in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("mixed_precision", self.mixed_precision, MIXED_PRECISION),
        ):
            if value not in valid:
                raise TVLensError(f"{name} must be one of {list(valid)}, got {value!r}.")


@dataclass(frozen=True)
class TrainConfig(TrainingConfig):
    """Everything that determines a synthetic training run (saved as ``config.json``).

    The model is an HF causal LM (``arch``) trained from scratch on ICL prompts of the task
    suite ``suite`` (a :func:`tvlens.tasks.get_suite` spec), with the loss on every answer
    token (the demonstrations' and the query's).
    """

    # model
    arch: str = "gpt2"
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_mlp: int | None = 256
    n_ctx: int = 64
    # data
    suite: dict = field(
        default_factory=lambda: {"name": "latent", "n_tasks": 8, "n_symbols": 32, "seed": 0}
    )
    k: int = 5
    template: str = "arrow"
    # optimisation: the shared fields of TrainingConfig, with these defaults
    steps: int = 1400
    batch_size: int = 128
    weight_decay: float = 0.01
    warmup_steps: int = 50
    # Task-vector prompting loss (Yang et al. 2025, "Task vectors in in-context learning:
    # emergence, formation, and benefits"): the residual after block ``tv_loss_layer`` at the
    # query of each ICL prompt is written into the zero-shot prompt of the same query, whose
    # answer is then also trained (weight ``tv_loss_weight``). 0 turns it off.
    tv_loss_weight: float = 0.0
    tv_loss_layer: int | None = None  # default: n_layers // 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tv_loss_layer is not None and not 0 <= self.tv_loss_layer < self.n_layers - 1:
            raise TVLensError(
                f"tv_loss_layer must be in 0..{self.n_layers - 2} (a block before the last), "
                f"got {self.tv_loss_layer}."
            )
        if self.k < 1:
            raise TVLensError(f"k must be >= 1 for ICL training, got {self.k}.")


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
    if name not in PRESETS:
        raise TVLensError(f"Unknown preset {name!r}; use one of {sorted(PRESETS)}.")
    return PRESETS[name]


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
