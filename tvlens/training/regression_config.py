"""The regression run's configuration (imported by the CLI to build its options, so it does not
load torch; its presets, which validate their mixtures, are in
:mod:`tvlens.training.regression`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tvlens.errors import TVLensError
from tvlens.runs.config import opt
from tvlens.training.config import TrainingConfig

if TYPE_CHECKING:
    from tvlens.tasks.regression import RegressionMixture


# The preset a run uses when none is named (the presets are in tvlens.training.regression).
DEFAULT_REGRESSION_PRESET = "cpu"


@dataclass(frozen=True)
class RegressionConfig(TrainingConfig):
    """Everything that determines a regression training run (saved as ``config.json``)."""

    _kind = "regression"

    mixture: str | dict = opt(
        "orthogonal4", "orthogonal4, orthogonal6, overlapping8 (or another named mixture)."
    )
    noise_std: float = 0.1
    n_points: int = 20
    # model: "gpt2" (learned absolute positions: a token knows whether it is an x or a y, as
    # in Garg et al.) or "llama" (rotary; only relative positions)
    arch: str = opt("gpt2", "Architecture.", choices=lambda: ("gpt2", "llama"))
    # GPT-2 initialises positions with std 0.02, tiny next to the read-in's output: the model
    # then barely tells x tokens from y tokens at first and sits on the predict-0 plateau for
    # longer. A larger init makes the token type visible from step 0.
    pos_init_std: float = 0.5
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int | None = 512
    # optimisation: the shared fields of TrainingConfig, with these defaults
    steps: int = opt(3000, "Optimizer steps.")
    warmup_steps: int = 100
    eval_prompts: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_at_least(2, "n_points", why=" (a demonstration and a query)")
        self.get_mixture()  # an unknown mixture name fails here, before anything is written

    def get_mixture(self) -> RegressionMixture:
        # imported here: the task module loads torch, and the CLI reads this config at start-up
        from tvlens.tasks.regression import MIXTURES, RegressionMixture

        base = MIXTURES.get(self.mixture) if isinstance(self.mixture, str) else None
        if isinstance(self.mixture, str) and base is None:
            raise TVLensError(f"Unknown mixture {self.mixture!r}; use one of {sorted(MIXTURES)}.")
        if base is None:
            base = RegressionMixture(**self.mixture)
        return replace(base, noise_std=self.noise_std)

    # checkpoint_steps reads these like a TrainConfig
    @property
    def n_ctx(self) -> int:
        return 2 * self.n_points
