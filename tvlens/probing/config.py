"""The configurations of ``tvlens probe`` and ``tvlens emergence``: what
:func:`tvlens.probing.runner.run_probe` and :func:`tvlens.probing.run.run_emergence` take, the
CLI fills and the runs write to ``config.json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from tvlens.runs import EMERGENCE, PROBE
from tvlens.runs.config import Config, no_type_check, opt

# Neighbours of task decodability's leave-one-out k-NN (Han et al. 2025): the one default of
# every ``knn_k`` (the probing functions' and ``tvlens pretrained decodability``'s).
KNN_K = 10


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
