"""The steps of a training run: batches by step or epochs over a dataset, which examples a
step's micro-batches hold, and which steps end an epoch or write a checkpoint. Everything
here is a function of the step (and the seed) only, which is what makes resume exact."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from tvlens.errors import TVLensError
from tvlens.training.config import TrainingConfig, checkpoint_steps

B = TypeVar("B")  # a kind's batch type


@dataclass(frozen=True)
class StepData(Generic[B]):
    """An endless stream of batches: ``batch(step, micro)`` is micro-batch ``micro`` of step
    ``step`` (both from 0 / 1 as in the loop), a function of its arguments only. The number of
    steps is the config's ``steps``."""

    batch: Callable[[int, int], B]


@dataclass(frozen=True)
class EpochData(Generic[B]):
    """``epochs`` passes over ``n_examples`` examples. Each epoch is a permutation drawn from
    ``numpy.random.default_rng([seed, epoch])``; micro-batches are ``batch_size`` consecutive
    indices of it (the last one of an epoch may be shorter, or dropped with ``drop_last``)
    and ``collate(indices)`` builds one. A step is ``grad_accum`` micro-batches (the last step
    of an epoch may have fewer); the micro-batches' losses are weighted by their rows."""

    n_examples: int
    collate: Callable[[np.ndarray], B]
    epochs: int
    drop_last: bool = False
    # ``collate(indices, epoch)`` instead: batches that vary by epoch (e.g. a prompt template
    # drawn per example and epoch), still a function of the step only.
    epoch_aware: bool = False

    def make(self, indices: np.ndarray, epoch: int) -> B:
        return self.collate(indices, epoch) if self.epoch_aware else self.collate(indices)


@dataclass(frozen=True)
class Plan:
    """The steps of a run: how many, which end an epoch, which write a checkpoint."""

    steps: int
    checkpoints: frozenset[int]
    steps_per_epoch: int | None = None

    def epoch(self, step: int) -> int | None:
        """The (1-based) epoch that step ``step`` belongs to; None without epochs."""
        if self.steps_per_epoch is None:
            return None
        return (step - 1) // self.steps_per_epoch + 1


def make_plan(
    cfg: TrainingConfig,
    data: StepData | EpochData,
    checkpoints: Literal["auto", "log", "epoch"] | Sequence[int] = "auto",
    processes: int = 1,
) -> Plan:
    """Steps and checkpoint steps of a run. ``"auto"``: log-spaced for :class:`StepData`,
    one per epoch for :class:`EpochData`; or an explicit list of steps. The last step always
    writes one."""
    spe = None
    steps = cfg.steps
    if isinstance(data, EpochData):
        if data.n_examples < 1 or data.epochs < 1:
            raise TVLensError(
                f"Epoch training needs examples and epochs >= 1, got {data.n_examples} "
                f"examples and {data.epochs} epochs."
            )
        micro = micro_batches_per_epoch(data, cfg.batch_size)
        if micro == 0:
            raise TVLensError(
                f"{data.n_examples} examples make no full batch of {cfg.batch_size} with "
                "drop_last: lower batch_size."
            )
        spe = math.ceil(micro / (cfg.grad_accum * processes))
        steps = data.epochs * spe
    if checkpoints == "auto":
        checkpoints = "epoch" if spe is not None else "log"
    if checkpoints == "log":
        at = set(checkpoint_steps(_Steps(steps, cfg.first_checkpoint, cfg.n_checkpoints)))
    elif checkpoints == "epoch":
        if spe is None:
            raise TVLensError("Checkpoints per epoch need EpochData; use 'log' for StepData.")
        at = {e * spe for e in range(1, steps // spe + 1)}
    else:
        at = {int(s) for s in checkpoints if 1 <= int(s) <= steps}
    return Plan(steps, frozenset(at | {steps}), spe)


@dataclass(frozen=True)
class _Steps:  # what checkpoint_steps reads, for a step count the engine derived
    steps: int
    first_checkpoint: int
    n_checkpoints: int


def micro_batches_per_epoch(data: EpochData, batch_size: int) -> int:
    if data.drop_last:
        return data.n_examples // batch_size
    return math.ceil(data.n_examples / batch_size)


def epoch_indices(data: EpochData, seed: int, epoch: int) -> np.ndarray:
    """The order of the examples in epoch ``epoch`` (1-based): a function of both only."""
    return np.random.default_rng([seed, epoch]).permutation(data.n_examples)


def step_micro_batches(
    data: StepData | EpochData,
    cfg: TrainingConfig,
    plan: Plan,
    step: int,
    rank: int = 0,
    processes: int = 1,
) -> list[tuple[Any, float]]:
    """The micro-batches of step ``step`` that process ``rank`` runs, each with the weight
    of its loss: its share of the step's rows (times ``processes``: the data-parallel
    gradient is the mean over processes). A function of the step only."""
    accum = cfg.grad_accum
    mine = range(rank * accum, (rank + 1) * accum)
    if isinstance(data, StepData):
        return [(data.batch(step, m), 1.0 / accum) for m in mine]
    assert plan.steps_per_epoch is not None
    epoch = plan.epoch(step)
    order = epoch_indices(data, cfg.seed, epoch)
    n_micro = micro_batches_per_epoch(data, cfg.batch_size)
    first = ((step - 1) % plan.steps_per_epoch) * accum * processes
    chunks = [
        order[m * cfg.batch_size : (m + 1) * cfg.batch_size]
        for m in range(first, min(first + accum * processes, n_micro))
    ]
    total = sum(len(c) for c in chunks)
    out = []
    for j in mine:
        if j < len(chunks):
            out.append((data.make(chunks[j], epoch), len(chunks[j]) * processes / total))
    if not out and chunks:
        # The epoch's last step left this process no rows; it must still join the gradient
        # all-reduce (data-parallel training hangs otherwise): a batch weighted 0.
        out.append((data.make(chunks[-1], epoch), 0.0))
    return out
