"""What ``tvlens train-synthetic`` runs: :func:`train_synthetic`, importable without torch. It
refuses an output folder it may not write at once
(:func:`~tvlens.models.doors.check_run_inputs`, issue 29), then imports
:mod:`tvlens.training.train` (the token ICL run kind) and the training engine, which do the
work. Its signature, defaults and docstring are written here only (issue 30)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvlens.models.doors import check_run_inputs
from tvlens.runs import TRAIN_SYNTHETIC
from tvlens.training.config import DEFAULT_PRESET, get_preset

if TYPE_CHECKING:
    from tvlens.training.config import TrainConfig
    from tvlens.training.engine import TrainResult


def train_synthetic(
    out: str | Path,
    preset: str = DEFAULT_PRESET,
    config: TrainConfig | None = None,
    resume: bool = False,
    device: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    **overrides: Any,
) -> TrainResult:
    """Train a model from scratch on synthetic ICL tasks and save a checkpoint series.

    Args:
        out: Run folder (created). A folder holding files tvlens did not write, or another
            kind of run, is refused before torch is imported.
        preset: ``"tiny"`` (seconds, tests), ``"default"`` (CPU demo), ``"gpu"``.
        config: A full :class:`TrainConfig` instead of a preset.
        resume: Continue an existing run in ``out`` from its last complete checkpoint.
        device: ``"cuda"``, ``"cpu"``...; default: the best available.
        stop_after: Stop (as if killed) once this step is done, without finishing the run.
        overrides: Any :class:`TrainConfig` field, e.g. ``steps=2000``, ``seed=1``.
    """
    check_run_inputs(TRAIN_SYNTHETIC, out=out)
    # start-up time: torch is imported only after the cheap checks
    from tvlens.training.engine import train_from_preset  # torch: after the checks
    from tvlens.training.train import token_kind  # torch too

    return train_from_preset(
        TRAIN_SYNTHETIC, token_kind, get_preset, out, preset, config, overrides, resume=resume,
        device=device, stop_after=stop_after, progress=progress,
    )  # fmt: skip
