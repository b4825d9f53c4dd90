"""Methods that make a frozen target do a task, compared in one loop: each is fitted on the
training queries, then scores test queries the same way (first answer token over the whole
vocabulary, and greedy exact match, as :func:`tvlens.evaluation.icl.answer_correctness`), and
reports its trainable parameters. The comparison with baselines (ICL, task vectors, LoRA,
prefix tuning) adds subclasses of :class:`SteeringMethod` and nothing else; ATV's is
:class:`tvlens.compare.tuned.ATVMethod` (trained ones live in :mod:`tvlens.compare.tuned`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tvlens.atv.data import ATVSplits, hash_text
from tvlens.compare.fitting import fresh_hf
from tvlens.compare.options import MethodOptions
from tvlens.errors import PromptError, TVLensError
from tvlens.evaluation.icl import ICLEvaluation, TaskAccuracy, evaluate_prompts
from tvlens.models.tvmodel import TVModel
from tvlens.plotting import plot_method_comparison
from tvlens.results import Result
from tvlens.tasks.core import Task
from tvlens.tasks.prompts import ICLPrompt, sample_prompts, tokenize_prompts


class SteeringMethod(ABC):
    """A way to make ``target`` do the tasks: ``fit`` on training queries, then ``correctness``
    on zero-shot test prompts (a method may add demonstrations, steer, or adapt weights).

    The one method base of the demo's loop (:func:`compare`) and of the comparison
    (:mod:`tvlens.compare.run`): a comparison cell makes its method with :meth:`for_cell`
    (its context, name, seed and hyper-parameter variant), and reads where it runs
    (``path``: ``bridge`` or plain ``hf``), why it is skipped (``skip_reason``; None: it runs)
    and its prompt length per query."""

    name: str = "method"
    path = "bridge"
    skip_reason: str | None = None
    virtual_tokens = 0
    ctx: Any = None  # the comparison's context (a cell's method); None: used on its own
    seed = 0
    variant: dict = {}
    run_dir: Path | None = None  # set by a cell: where a trained method trains
    target: TVModel
    # Its family's block of the comparison's configuration, read beyond the common fields
    # (config.COMMON) as ``self.options`` (tvlens.compare.options: VectorOptions, PeftOptions,
    # ATVOptions); None: the common fields only.
    options_class: ClassVar[type[MethodOptions] | None] = None

    @property
    def options(self) -> Any:
        """This method's block of its cell's configuration (``cfg.vector``, ``cfg.peft``...)."""
        if self.options_class is None or self.ctx is None:
            raise TVLensError(f"{self.name} has no options block (it reads none, or no cell).")
        return self.ctx.cfg.options_for(self.options_class)

    @classmethod
    def for_cell(
        cls, ctx: Any, name: str, seed: int, variant: dict | None = None, **kwargs: Any
    ) -> SteeringMethod:
        """The method for one comparison cell (a subclass made from the context takes it
        in ``__init__``: ``cls(ctx, name, seed, variant, **kwargs)``)."""
        return cls(ctx, name, seed, variant, **kwargs)  # type: ignore[call-arg]

    def bind(self, ctx: Any, name: str, seed: int, variant: dict | None = None) -> None:
        """Set what a comparison cell's method reads: the context, its name, seed and
        variant, the target, the batch size."""
        self.ctx, self.name, self.seed = ctx, name, seed
        self.variant = dict(variant or {})
        self.target = ctx.target
        self.batch_size = ctx.cfg.eval_batch_size
        self.run_dir = None

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        """Train on ``splits.train`` (dev: ``splits.dev``); returns what to report."""
        return {}

    @abstractmethod
    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        """(first token correct, exact match) per zero-shot prompt."""

    def trainable_parameters(self) -> int:
        return 0

    # Trained methods: the weights of the best-dev epoch (a sweep cell keeps them so that the
    # selected variant's seed 0 is scored without training again).
    def save_best(self, path: Path) -> None:
        raise NotImplementedError(f"{self.name} has no trained weights.")

    def restore(self, path: Path) -> None:
        raise NotImplementedError(f"{self.name} has no trained weights.")

    def scored_prompts(self, prompts: Sequence[ICLPrompt]) -> list[ICLPrompt]:
        """The prompts the target reads for these queries (zero-shot unless overridden)."""
        return list(prompts)

    def by_length(self, prompts: Sequence[ICLPrompt]) -> tuple[list[ICLPrompt], list[int]]:
        """``prompts`` shortest first, with the prompt tokens the target reads for each (BOS
        included, answer excluded). The compare scores in this order so that a batch pads
        little: in task order 34% of the cpu preset's zero-shot tokens were pads; sorted, a
        query scored 1.25x (bridge) to 1.5x (HF) faster (SmolLM2-135M, 1 thread). A query's
        score does not depend on the order."""
        lens = []
        ps = self.scored_prompts(prompts)
        for start in range(0, len(ps), 256):
            b = tokenize_prompts(ps[start : start + 256], self.target, device="cpu")
            lens += b.attention_mask.sum(-1).tolist()
        order = np.argsort(lens, kind="stable")
        return [prompts[i] for i in order], [lens[i] for i in order]


class ZeroShot(SteeringMethod):
    """The target on the query alone. In the comparison it also times the plain HF model on
    the same queries (the reference for the peft methods' inference time) and checks it
    agrees with the bridge."""

    name = "zero-shot"

    def __init__(self, target: TVModel, batch_size: int = 64):
        self.target, self.batch_size = target, batch_size

    @classmethod
    def for_cell(cls, ctx, name, seed, variant=None, **kwargs) -> ZeroShot:
        method = cls(ctx.target, ctx.cfg.eval_batch_size)
        method.bind(ctx, name, seed, variant)
        return method

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        if self.ctx is None:
            return {}
        # Every 4th test query, shortest first as the compare scores: the reference time
        # per query of the plain HF path, and a check that both paths score alike (the peft
        # methods run on the plain HF model). A quarter keeps this cell near one scoring pass.
        if self.target.spec.source == "memory":  # no plain HF copy to time (fresh_hf)
            return {"hf_infer_seconds_per_query": None, "hf_checked_queries": 0}
        prompts, _ = self.by_length(
            [p for s in self.ctx.data.groups().values() for p in s.test][::4]
        )
        hf = fresh_hf(self.target)
        t0 = time.perf_counter()
        f_hf, _ = evaluate_prompts(hf, prompts, tokenizer=self.target, batch_size=self.batch_size)
        dt = (time.perf_counter() - t0) / len(prompts)
        f_bridge, _ = self.correctness(prompts)
        del hf
        return {"hf_infer_seconds_per_query": dt, "hf_checked_queries": len(prompts),
                "hf_agrees_with_bridge": float((f_hf == f_bridge).mean())}  # fmt: skip

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        return evaluate_prompts(self.target, list(prompts), batch_size=self.batch_size)


class ICL(SteeringMethod):
    """The target with ``k`` demonstrations of the query's task drawn from the training
    queries (it needs the task's demonstrations; ATV does not). The demonstrations are drawn
    by a seed from the query itself, so every method, call and order of queries sees the same
    ones. In the comparison (in-domain or unseen: the method reads the test task's
    demonstrations) it is skipped when a task has fewer than ``k`` training queries or a
    prompt exceeds the context."""

    def __init__(self, target: TVModel, k: int = 5, seed: int = 0, batch_size: int = 64):
        self.target, self.k, self.seed, self.batch_size = target, k, seed, batch_size
        self.name = f"icl-{k}"
        self.demos: dict[str, Task] = {}

    @classmethod
    def for_cell(cls, ctx, name, seed, variant=None, k: int = 5, **kwargs) -> ICL:
        method = cls(ctx.target, k, seed, ctx.cfg.eval_batch_size)
        method.bind(ctx, name, seed, variant)
        groups = ctx.data.groups()
        method.fit_demos([p for s in groups.values() for p in s.train])
        fewest = min(len(t) for t in method.demos.values())
        if fewest < k:  # demonstrations come from the training queries only
            method.skip_reason = (
                f"{k}-shot prompts need {k} training queries per task as demonstrations; "
                f"this configuration has {fewest} (n_train)"
            )
            return method
        tests = [p for s in groups.values() for p in s.test]
        try:
            lens = [
                tokenize_prompts(method.scored_prompts(tests[i : i + 256]), method.target,
                                 include_answer=True, device="cpu").attention_mask.sum(-1).max()
                for i in range(0, len(tests), 256)
            ]  # fmt: skip
        except PromptError as e:
            method.skip_reason = f"{k}-shot prompts do not fit the context: {e}"
        else:
            method.max_tokens = int(max(lens))
        return method

    def fit_demos(self, train: Sequence[ICLPrompt]) -> None:
        by_task: dict[str, list] = {}
        for p in train:
            by_task.setdefault(p.task, []).append(p.query)
        self.demos = {t: Task(t, tuple(exs)) for t, exs in by_task.items()}

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        if self.ctx is None:  # a cell's demonstrations are fitted once, in for_cell
            self.fit_demos(splits.train)
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

    def scored_prompts(self, prompts: Sequence[ICLPrompt]) -> list[ICLPrompt]:
        return self.prompts(prompts)

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        return evaluate_prompts(self.target, self.prompts(prompts), batch_size=self.batch_size)


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
