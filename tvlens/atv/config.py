"""ATV run configuration and presets."""

from __future__ import annotations

from dataclasses import dataclass

from tvlens.runs.config import opt
from tvlens.training.config import TrainingConfig, pick_preset


@dataclass(frozen=True)
class ATVConfig(TrainingConfig):
    """Everything that determines an ATV training run (saved as ``config.json``).

    ``generator=None`` uses the target's own weights (a separate, trainable copy) as the
    generator. Defaults follow the official code (Kang et al. 2025): λ = 0.001, every layer,
    all positions, full-rank expansion, generator trained, Adam(W) lr 5e-4, weight decay 1e-5,
    batch 1, 15 epochs, 90 training queries per task.
    """

    _kind = "ATV"

    target: str = opt("", "Target model: HF name, folder or tvlens run.")
    target_revision: str | None = None
    generator: str | None = opt(None, "Generator model (default: a copy of the target).")
    generator_revision: str | None = None
    generator_stop_at_layer: int | None = None  # use only the generator's first N blocks
    train_generator: bool = opt(
        True, "Train the generator LM too (or freeze it).",
        flag="--train-generator/--frozen-generator",
    )  # fmt: skip
    pooling: str = "last"
    generator_input: str = "prompt"  # "prompt" (templated), "input" (raw) or "query" (Q/A)
    rank: int | None = opt(None, "Rank of the expansion (default: full).")
    layers: list[int] | None = opt(
        None, "Target layers to steer, e.g. 0,1,2 (default: all).", sep=","
    )
    positions: str = opt("all", "Positions steered.", choices=lambda: ("all", "last"))
    scale: float = opt(1e-3, "λ, the steering scale.")
    # data
    suite: dict | str = opt(
        help='Suite name, folder or JSON spec, e.g. \'{"name": "words"}\'.',
        factory=lambda: {"name": "atv_lists"},
        spec=True,
    )
    template: str = "arrow"
    n_train: int = opt(90, "Training queries per task.")
    n_dev: int = 20
    n_test: int = 50
    # optimisation (the engine's options: TrainingConfig; `steps` follows from the epochs)
    epochs: int = opt(15, "Epochs.")
    batch_size: int = opt(1, "Rows per micro-batch.")
    lr: float = 5e-4
    weight_decay: float = 1e-5
    log_every: int = 1
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_choice("pooling", ("last", "mean"))
        if self.rank is not None:
            self.check_at_least(1, "rank", why=" (or None for full rank)")
        self.check_at_least(1, "epochs", "n_train")


DEFAULT_PRESET = "tiny"  # when none is named: seconds, the synthetic setting
PRESETS: dict[str, ATVConfig] = {
    # Seconds on a CPU: the synthetic setting (tvlens-trained list model as target and,
    # trained, as generator), λ = 1 because a 64-wide target needs no 0.001 damping.
    "tiny": ATVConfig(
        suite={"name": "atv_lists"},
        n_train=90,
        n_dev=20,
        n_test=50,
        epochs=3,
        batch_size=8,
        lr=1e-3,
        scale=1.0,
        warmup_steps=5,
    ),
    # SmolLM2-135M on this 2-core CPU: a frozen 4-block SmolLM2 generator and a low-rank
    # expansion, the `words` suite, 30 training queries per task, 3 epochs.
    "cpu": ATVConfig(
        target="smollm2-135m",
        generator="smollm2-135m",
        generator_stop_at_layer=4,
        train_generator=False,
        rank=64,
        suite={"name": "words"},
        n_train=30,
        n_dev=5,
        n_test=15,
        epochs=3,
        batch_size=8,
        lr=1e-3,
        scale=1e-2,
        warmup_steps=5,
    ),
    # The paper's recipe (official code): GPT-2 generator fully trained, full-rank expansion,
    # λ = 0.001 at every layer and position, batch 1, 15 epochs, 90 examples per task.
    "gpu": ATVConfig(generator="gpt2", epochs=15, n_train=90, batch_size=1, mixed_precision="bf16"),
}


def get_preset(name: str) -> ATVConfig:
    return pick_preset(PRESETS, name, "ATV ")
