"""Evaluates a model's in-context-learning accuracy per task: first answer token, and greedy
exact match for multi-token answers. (Task vectors are evaluated by
:mod:`tvlens.injection.evaluate`, which uses this module for its zero-shot and ICL baselines.)

Exact match is computed by teacher forcing in one forward pass: greedy decoding reproduces the
answer ``a_1..a_m`` exactly when, for every ``j``, the argmax after ``prompt + a_<j`` is ``a_j``
(the first wrong argmax is where greedy decoding would leave the answer). So one pass over
``prompt + answer`` gives the same verdict as generating ``m`` tokens one by one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tvlens.errors import ConfigError
from tvlens.evaluation.config import EvalConfig
from tvlens.plotting import plot_icl_accuracy
from tvlens.results import Result
from tvlens.tasks.core import Task, TaskSuite
from tvlens.tasks.prompts import (
    PaddingSide,
    PromptBatch,
    PromptTemplate,
    sample_prompts,
    tokenize_prompts,
)


@dataclass(frozen=True)
class TaskAccuracy:
    task: str
    first_token: float
    exact_match: float
    n: int


@dataclass(frozen=True)
class ICLEvaluation(Result):
    """Accuracies per task at ``k`` demonstrations."""

    k: int
    template: str
    tasks: dict[str, TaskAccuracy]

    @property
    def mean_first_token(self) -> float:
        return float(np.mean([t.first_token for t in self.tasks.values()]))

    @property
    def mean_exact_match(self) -> float:
        return float(np.mean([t.exact_match for t in self.tasks.values()]))

    def first_token(self) -> dict[str, float]:
        return {n: t.first_token for n, t in self.tasks.items()}

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy: one row per task (``task``, ``first_token``, ``exact_match``, ``n``, ``k``)."""
        frame = pd.DataFrame([asdict(t) for t in self.tasks.values()])
        frame["k"] = self.k
        return frame

    def plot(self, **kwargs):

        return plot_icl_accuracy(self, **kwargs)

    def __str__(self) -> str:
        rows = [(n, t.first_token, t.exact_match, f"  (n={t.n})") for n, t in self.tasks.items()]
        rows.append(("mean", self.mean_first_token, self.mean_exact_match, ""))
        return "\n".join(f"{n:24s} first-token {f:.3f}  exact {e:.3f}{tail}"
                         for n, f, e, tail in rows)  # fmt: skip

    def to_dict(self) -> dict:
        return {
            "k": self.k,
            "template": self.template,
            "mean_first_token": self.mean_first_token,
            "mean_exact_match": self.mean_exact_match,
            "tasks": {n: asdict(t) for n, t in self.tasks.items()},
        }


def model_logits(model: Any, batch: PromptBatch) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of a tvlens model, a bridge or a plain HF causal LM on a padded batch."""
    if hasattr(model, "bridge") or hasattr(model, "cfg"):  # tvlens model or bridge
        return model(batch.tokens, attention_mask=batch.attention_mask)
    # A plain HF model does not derive positions from the mask: under left padding GPT-2's
    # absolute positions would be shifted. Pass them explicitly, as the bridge does.
    pos = (batch.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(batch.tokens, attention_mask=batch.attention_mask, position_ids=pos)
    return out.logits if hasattr(out, "logits") else out


# Where answer_correctness records its predictions while record_predictions() is active.
_PREDICTIONS: ContextVar[list | None] = ContextVar("tvlens_predictions", default=None)


@contextmanager
def record_predictions() -> Iterator[list[tuple[str, str, list[int]]]]:
    """Inside, every :func:`answer_correctness` call appends ``(task, query input, predicted
    token ids)`` per row to the yielded list: the argmax at each answer position given the gold
    answer before it (the greedy decoding up to and including its first wrong token), so a
    comparison can store what each method said per query, whatever order it scores in."""
    rec: list[tuple[str, str, list[int]]] = []
    token = _PREDICTIONS.set(rec)
    try:
        yield rec
    finally:
        _PREDICTIONS.reset(token)


def note_predictions(rows: Sequence[tuple[str, str, list[int]]]) -> None:
    """Add ``(task, query input, predicted token ids)`` rows to the list of an active
    :func:`record_predictions` (for a method scored by decoding instead of
    :func:`answer_correctness`); nothing when none is active."""
    rec = _PREDICTIONS.get()
    if rec is not None:
        rec.extend(rows)


@torch.no_grad()
def answer_correctness(
    model: Any, batch: PromptBatch
) -> tuple[Bool[Tensor, " batch"], Bool[Tensor, " batch"]]:
    """(first answer token correct, whole answer correct under greedy decoding) per row.

    ``batch`` must be built with ``include_answer=True``.
    """
    if not batch.include_answer:
        raise ValueError("answer_correctness needs a batch built with include_answer=True.")
    logits = model_logits(model, batch)
    pred = logits.argmax(-1)
    first = torch.empty(len(batch), dtype=torch.bool)
    exact = torch.empty(len(batch), dtype=torch.bool)
    for i, ans in enumerate(batch.answer_ids):
        q = int(batch.query_pos[i])
        # The logit at position p predicts token p+1: answer token j is predicted at q + j.
        got = pred[i, q : q + len(ans)].cpu()
        want = torch.tensor(ans)
        first[i] = bool(got[0] == want[0])
        exact[i] = bool(torch.equal(got, want))
    rec = _PREDICTIONS.get()
    if rec is not None:
        for i, p in enumerate(batch.prompts):
            q = int(batch.query_pos[i])
            rec.append((p.task, p.query.input, pred[i, q : q + len(batch.answer_ids[i])].tolist()))
    return first, exact


def evaluate_prompts(
    model: Any,
    prompts: Sequence,
    tokenizer: Any | None = None,
    batch_size: int = 64,
    padding_side: PaddingSide = "left",
) -> tuple[np.ndarray, np.ndarray]:
    """Correctness arrays (first token, exact match) for a list of prompts."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    firsts, exacts = [], []
    tok_src = tokenizer if tokenizer is not None else model
    device = getattr(model, "device", None)
    for start in range(0, len(prompts), batch_size):
        batch = tokenize_prompts(
            prompts[start : start + batch_size],
            tok_src,
            padding_side=padding_side,
            include_answer=True,
            device=device,
        )
        f, e = answer_correctness(model, batch)
        firsts.append(f.numpy())
        exacts.append(e.numpy())
    return np.concatenate(firsts), np.concatenate(exacts)


def default_k(model: Any) -> int:
    """The model's training k (a tvlens run records it), else 5: what ``k=None`` means, as in
    every other command (docs/api/names.md)."""
    spec = getattr(model, "spec", None)
    return int(getattr(spec, "train_info", {}).get("k", 5))


def evaluate_icl(
    model: Any,
    tasks: TaskSuite | Task | Sequence[Task],
    k: int | None = EvalConfig.k,  # the defaults are `tvlens eval`'s (EvalConfig), written once
    n_prompts: int = EvalConfig.n_prompts,
    seed: int = EvalConfig.seed,
    template: str | PromptTemplate = EvalConfig.template,
    tokenizer: Any | None = None,
    batch_size: int = EvalConfig.batch_size,
    padding_side: PaddingSide = "left",
    progress: bool = True,
) -> ICLEvaluation:
    """ICL accuracy of ``model`` on each task with ``k`` demonstrations.

    Args:
        model: A ``TVModel``, a ``TransformerBridge``, or an HF causal LM (then pass
            ``tokenizer``).
        tasks: A suite, a task, or a list of tasks.
        k: Demonstrations per prompt; ``None``: the model's training k (a tvlens run), else 5.
        n_prompts: Prompts per task (each query used once when the task is large enough).
        progress: A progress bar over the tasks (``tqdm.auto``: a widget in notebooks).
    """
    from tqdm.auto import tqdm

    task_list = [tasks] if isinstance(tasks, Task) else list(tasks)
    if k is None:
        k = default_k(model)
    results = {}
    bar = tqdm(task_list, desc="ICL accuracy", disable=not progress, leave=False)
    for ti, task in enumerate(bar):
        prompts = sample_prompts(task, k, n_prompts, seed=seed + 1000 * ti, template=template)
        f, e = evaluate_prompts(model, prompts, tokenizer, batch_size, padding_side)
        results[task.name] = TaskAccuracy(task.name, float(f.mean()), float(e.mean()), len(f))
    tname = template if isinstance(template, str) else template.name
    return ICLEvaluation(k=k, template=tname, tasks=results)
