"""Metrics for patching: a function of the patched run's logits ``[batch, pos, d_vocab]`` that
returns a scalar, as in TransformerLens's ``patching`` module.

A metric with ``last_only = True`` reads only the last position; the patching engine then hands
it ``[batch, 1, d_vocab]`` and never assembles full-length logits for it. A plain function is
given the full logits (positions a patch cannot change are taken from the corrupted run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvlens.errors import ConfigError, PromptError
from tvlens.tasks.prompts import PromptBatch

Metric = Callable[[Tensor], Tensor]


def _last_column_is_query(batch: PromptBatch) -> bool:
    return bool((batch.query_pos == batch.tokens.shape[1] - 1).all())


BUILT_BY = {"AnswerProb": "AnswerProb.from_batch(batch)",
            "LogitDiff": "LogitDiff.from_batches(clean, corrupted)"}  # fmt: skip


def check_metric_batch(metric: str, logits: Tensor, *rows: tuple[str, Tensor | None]) -> None:
    """``metric`` was built for the batch ``logits`` come from: one entry per prompt in each
    of ``rows`` (its token ids and positions), ids within the vocabulary, positions within
    the prompts; else one :class:`~tvlens.errors.ConfigError` naming the field and the fix."""
    n, n_pos, vocab = logits.shape
    for field, t in rows:
        if t is None:
            continue
        if t.shape[0] != n:
            raise ConfigError(
                f"{metric}.{field} has {t.shape[0]} entries but the batch has {n} prompts: the "
                f"metric was built for another batch; build it from this one "
                f"({BUILT_BY.get(metric, metric)})."
            )
        hi = n_pos if field == "pos" else vocab
        if t.numel() and not (-hi <= int(t.min()) and int(t.max()) < hi):
            what = "positions" if field == "pos" else "token ids"
            raise ConfigError(
                f"{metric}.{field} holds {what} outside 0..{hi - 1} (this batch has {n_pos} "
                f"positions and a vocabulary of {vocab}): build the metric from this batch."
            )


def _at(
    logits: Float[Tensor, "batch pos d_vocab"], pos: Int[Tensor, " batch"] | None
) -> Float[Tensor, "batch d_vocab"]:
    if pos is None:
        return logits[:, -1]
    return logits[torch.arange(logits.shape[0], device=logits.device), pos]


@dataclass
class LogitDiff:
    """Mean over prompts of ``logit[correct] - logit[wrong]`` at ``pos`` (the last position
    when ``pos`` is None)."""

    correct: Int[Tensor, " batch"]
    wrong: Int[Tensor, " batch"]
    pos: Int[Tensor, " batch"] | None = None
    name: str = "logit_diff"

    @property
    def last_only(self) -> bool:
        return self.pos is None

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        check_metric_batch("LogitDiff", logits, ("correct", self.correct), ("wrong", self.wrong),
                           ("pos", self.pos))  # fmt: skip
        lg = _at(logits, self.pos).float()
        rows = torch.arange(lg.shape[0], device=lg.device)
        return (lg[rows, self.correct] - lg[rows, self.wrong]).mean()

    @classmethod
    def from_batches(cls, clean: PromptBatch, corrupted: PromptBatch) -> LogitDiff:
        """Clean answer minus the corrupted prompts' answer (first tokens), at the query."""
        _require_answers(clean)
        _require_answers(corrupted)
        pos = None if _last_column_is_query(clean) else clean.query_pos
        return cls(clean.answer_first, corrupted.answer_first, pos)


@dataclass
class AnswerProb:
    """Mean over prompts of the probability of ``answer`` (first tokens) at ``pos``."""

    answer: Int[Tensor, " batch"]
    pos: Int[Tensor, " batch"] | None = None
    name: str = "answer_prob"

    @property
    def last_only(self) -> bool:
        return self.pos is None

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        check_metric_batch("AnswerProb", logits, ("answer", self.answer), ("pos", self.pos))
        probs = torch.softmax(_at(logits, self.pos).float(), dim=-1)
        return probs[torch.arange(probs.shape[0], device=probs.device), self.answer].mean()

    @classmethod
    def from_batch(cls, batch: PromptBatch) -> AnswerProb:
        _require_answers(batch)
        pos = None if _last_column_is_query(batch) else batch.query_pos
        return cls(batch.answer_first, pos)


def _require_answers(batch: PromptBatch) -> None:
    if batch.include_answer:
        raise PromptError(
            "Patching metrics read the prediction at the query: tokenize the prompts without "
            "their answers (include_answer=False)."
        )
    # The metric is the answer's probability read from one next-token distribution: a
    # multi-token answer would be scored by its first token alone.
    batch.require_single_token()


def metric_name(metric: Metric) -> str:
    return getattr(metric, "name", None) or getattr(metric, "__name__", type(metric).__name__)
