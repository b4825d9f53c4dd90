"""The configuration of ``tvlens patch``: what :func:`tvlens.patching.run_patching` takes, the
CLI fills and the run writes to ``config.json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from tvlens.runs import PATCH
from tvlens.runs.config import MAX_BATCH, Config, no_type_check, opt


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
