"""The configuration of ``tvlens eval`` (a model's ICL accuracy per task): what
:func:`tvlens.evaluation.run_eval` takes, the CLI fills and the run writes to ``config.json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from tvlens.runs import EVAL
from tvlens.runs.config import Config, no_type_check, opt


@no_type_check
@dataclass(frozen=True)
class EvalConfig(Config):
    """ICL accuracy (first token and exact match) per task (``tvlens eval``)."""

    kind: ClassVar[str] = EVAL
    minimum: ClassVar[dict[str, int]] = {"k": 0, "n_prompts": 1, "batch_size": 1}
    k: int | None = opt(None, "Demonstrations (default: the model's training k, else 5).")
    n_prompts: int = opt(64, "Prompts per task.")
    template: Literal["arrow", "qa"] = opt("arrow", "Prompt template.")
    seed: int = opt(0, "Seed of the prompts.")
    batch_size: int = opt(64, "Prompts per forward pass.")
