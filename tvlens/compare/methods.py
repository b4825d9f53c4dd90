"""Methods that make a frozen target do a task, compared in one loop: each is fitted on the
training queries, then scores test queries the same way (first answer token over the whole
vocabulary, and greedy exact match, as :func:`tvlens.icl_accuracy.answer_correctness`), and
reports its trainable parameters. The comparison with baselines (ICL, task vectors, LoRA,
prefix tuning) adds subclasses of :class:`SteeringMethod` and nothing else.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tvlens.atv.data import ATVSplits, hash_text
from tvlens.atv.train import train_atv
from tvlens.icl_accuracy import ICLEvaluation, TaskAccuracy, evaluate_prompts
from tvlens.models.tvmodel import TVModel
from tvlens.plotting import plot_method_comparison
from tvlens.results import Result
from tvlens.tasks.core import Task
from tvlens.tasks.prompts import ICLPrompt, sample_prompts


class SteeringMethod(ABC):
    """A way to make ``target`` do the tasks: ``fit`` on training queries, then ``correctness``
    on zero-shot test prompts (a method may add demonstrations, steer, or adapt weights)."""

    name: str = "method"

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        """Train on ``splits.train`` (dev: ``splits.dev``); returns what to report."""
        return {}

    @abstractmethod
    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        """(first token correct, exact match) per zero-shot prompt."""

    def trainable_parameters(self) -> int:
        return 0


class ZeroShot(SteeringMethod):
    """The target on the query alone."""

    name = "zero-shot"

    def __init__(self, target: TVModel, batch_size: int = 64):
        self.target, self.batch_size = target, batch_size

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        return evaluate_prompts(self.target, list(prompts), batch_size=self.batch_size)


class ICL(SteeringMethod):
    """The target with ``k`` demonstrations of the query's task drawn from the training
    queries (it needs the task's demonstrations; ATV does not). The demonstrations are drawn
    by a seed from the query itself, so every method, call and order of queries sees the same
    ones (the comparison's ``icl_k`` uses this class too)."""

    def __init__(self, target: TVModel, k: int = 5, seed: int = 0, batch_size: int = 64):
        self.target, self.k, self.seed, self.batch_size = target, k, seed, batch_size
        self.name = f"icl-{k}"
        self.demos: dict[str, Task] = {}

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        by_task: dict[str, list] = {}
        for p in splits.train:
            by_task.setdefault(p.task, []).append(p.query)
        self.demos = {t: Task(t, tuple(exs)) for t, exs in by_task.items()}
        return {}

    def prompts(self, prompts: Sequence[ICLPrompt]) -> list[ICLPrompt]:
        """Each prompt's query after ``k`` demonstrations of its task, in its template (an
        instruction, if the template has one, comes first)."""
        out = []
        for p in prompts:
            s = self.seed * 1_000_003 + (hash_text(p.task + "\x00" + p.query.input) % 1_000_003)
            out += sample_prompts(self.demos[p.task], self.k, 1, seed=s, template=p.template,
                                  queries=Task(p.task, (p.query,)))  # fmt: skip
        return out

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        return evaluate_prompts(self.target, self.prompts(prompts), batch_size=self.batch_size)


class ATVMethod(SteeringMethod):
    """Adaptive task vectors: trained with :func:`tvlens.atv.train.train_atv` into
    ``run_dir`` (a finished run there is reused), or an already trained ``atv``."""

    def __init__(
        self,
        config: Any = None,
        run_dir: str | Path | None = None,
        name: str = "atv",
        atv: Any = None,
        batch_size: int = 64,
        **train_kwargs: Any,
    ):
        self.config, self.name, self.atv, self.batch_size = config, name, atv, batch_size
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.train_kwargs = train_kwargs

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:

        if self.run_dir is None:  # given trained
            return {}

        result = train_atv(self.run_dir, config=self.config, resume=True, **self.train_kwargs)
        self.atv = result.atv
        return {"seconds": result.seconds}

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        if self.atv is None:
            raise RuntimeError("Call fit() first.")
        return self.atv.correctness(prompts, batch_size=self.batch_size)

    def trainable_parameters(self) -> int:
        return 0 if self.atv is None else self.atv.trainable_parameters()


@dataclass(frozen=True)
class MethodResult(Result):
    method: str
    evaluation: ICLEvaluation
    trainable_parameters: int
    fit_seconds: float
    eval_seconds: float

    def to_dataframe(self):
        """The evaluation's rows (one per task), with the method's name."""
        df = self.evaluation.to_dataframe()
        df.insert(0, "method", self.method)
        return df

    def plot(self, **kwargs):

        return plot_method_comparison([self], **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "trainable_parameters": self.trainable_parameters,
            "fit_seconds": self.fit_seconds,
            "eval_seconds": self.eval_seconds,
            **self.evaluation.to_dict(),
        }


def score(
    method: SteeringMethod, prompts: Sequence[ICLPrompt], template: str = "arrow"
) -> ICLEvaluation:
    """Per-task first-token and exact-match accuracy of ``method`` on ``prompts``."""
    first, exact = method.correctness(prompts)
    tasks = list(dict.fromkeys(p.task for p in prompts))
    names = np.array([p.task for p in prompts])
    acc = {
        t: TaskAccuracy(
            t,
            float(first[names == t].mean()),
            float(exact[names == t].mean()),
            int((names == t).sum()),
        )  # fmt: skip
        for t in tasks
    }
    return ICLEvaluation(k=0, template=template, tasks=acc)


def compare(
    methods: Sequence[SteeringMethod], splits: ATVSplits, split: str = "test"
) -> list[MethodResult]:
    """Fit every method on ``splits`` and score it on one split's queries: one loop."""
    prompts = getattr(splits, split)
    template = prompts[0].template.name
    out = []
    for m in methods:
        t0 = time.time()
        m.fit(splits)
        t1 = time.time()
        ev = score(m, prompts, template)
        out.append(MethodResult(m.name, ev, m.trainable_parameters(), t1 - t0, time.time() - t1))
    return out
