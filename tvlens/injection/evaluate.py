"""Evaluates task vectors and function vectors end to end: extract on a train split, choose the
layer on a dev split, report accuracy on a test split next to zero-shot and ICL accuracy on the
same test queries. (A model's plain ICL accuracy is :mod:`tvlens.evaluation.icl`.)

The harness of issue 31: every method (any :class:`~tvlens.extraction.methods.ExtractionMethod`),
the zero-shot and the ICL rows are scored on the same test queries by greedy exact match of the
whole answer (the verdict metric, :func:`tvlens.evaluation.scoring.greedy_exact_match`) and by
the first token, with the share of ICL accuracy recovered, the KL from ICL's next-token
distribution at the answer to the row's (:func:`tvlens.evaluation.scoring.kl_to_reference`),
the cost (forward passes and seconds to extract, added latency per query) and 95% bootstrap
intervals over tasks and queries (:func:`tvlens.evaluation.stats.hierarchical_bootstrap`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tvlens.errors import ConfigError, EmptyTaskError
from tvlens.evaluation.icl import evaluate_prompts
from tvlens.evaluation.scoring import (
    AnswerScores,
    answer_logits,
    greedy_exact_match,
    kl_to_reference,
)
from tvlens.evaluation.stats import hierarchical_bootstrap
from tvlens.extraction.config import VectorsConfig
from tvlens.extraction.function_vectors import HeadTable
from tvlens.extraction.methods import Extracted, ExtractionMethod, ResidualWrite
from tvlens.extraction.vectors import TaskVector
from tvlens.injection.intervention import apply_intervention
from tvlens.injection.sweep import best_on_dev, layer_sweep_correct
from tvlens.models.tvmodel import TVModel
from tvlens.plotting import plot_layer_sweep, save_figure
from tvlens.plotting.vectors import plot_exact_match_intervals, plot_recovered_heatmap
from tvlens.results import Result
from tvlens.tasks.core import Task, TaskSuite
from tvlens.tasks.prompts import ICLPrompt, PromptBatch, sample_prompts, tokenize_prompts

NAN = float("nan")
ZERO_SHOT, ICL = "zero_shot", "icl"  # the two reference rows of the harness
# Bootstrap replicates of the harness's intervals (a 95% bound then moves by about 0.002
# between bootstrap seeds on 0/1 scores: tvlens.evaluation.stats).
N_RESAMPLES = 10_000
LATENCY_REPEATS = 3  # forwards timed with and without each intervention (the fastest kept)


@dataclass
class VectorMethodResult:
    """One extraction method on one task: the choice made on dev and its test accuracy, and
    the accuracy at every choice (layer). (A method's result in the comparison of steering
    methods is :class:`tvlens.compare.methods.MethodResult`.)"""

    method: str
    best_layer: int
    task_vector: float  # test accuracy at best_layer
    recovered: float  # task_vector / icl (0 when icl is 0)
    dev_by_layer: list[float]  # dev accuracy per choice of the method's dev_grid (a layer)
    test_by_layer: list[float]
    # the hyper-parameters chosen on dev, where the method tunes more than the layer
    chosen: dict[str, Any] = field(default_factory=dict)
    # The harness's columns (issue 31), on the same test queries at the choice made on dev
    # (NaN / -1 in reports saved before they existed).
    exact_match: float = NAN  # greedy exact match of the whole answer
    recovered_exact: float = NAN  # exact_match / the ICL row's exact match (0 when that is 0)
    kl_to_icl: float = NAN  # mean KL(ICL || method) of the next-token distribution, nats
    steer: str = ""  # "first_step" (writes at the last position) or "every_step" (at all)
    extract_forwards: int = -1  # forward calls of the model during extract
    extract_prompts: int = -1  # prompts (rows) through those forwards
    extract_s: float = NAN  # seconds to extract
    latency_s: float = NAN  # seconds per query: one forward of the zero-shot prompt, steered
    added_latency_s: float = NAN  # latency_s minus the same forward without the intervention


@dataclass
class TaskResult:
    task: str
    zero_shot: float
    icl: float
    n_test: int
    k: int
    methods: dict[str, VectorMethodResult] = field(default_factory=dict)
    # The harness's reference rows (issue 31): exact match, KL(ICL || zero-shot) and the
    # seconds per query of one forward of the zero-shot and of the ICL prompt.
    zero_shot_exact: float = NAN
    icl_exact: float = NAN
    zero_shot_kl: float = NAN
    zero_shot_latency_s: float = NAN
    icl_latency_s: float = NAN

    @property
    def zero_shot_recovered(self) -> float:
        return self.zero_shot / self.icl if self.icl > 0 else 0.0

    @property
    def zero_shot_recovered_exact(self) -> float:
        return self.zero_shot_exact / self.icl_exact if self.icl_exact > 0 else 0.0


@dataclass
class VectorReport(Result):
    model: dict
    config: dict
    tasks: dict[str, TaskResult]
    vectors: dict[str, dict[str, TaskVector]] = field(default_factory=dict)  # method -> task
    heads: dict[str, HeadTable] = field(default_factory=dict)  # task -> FV head table
    # Per-query records of every row (zero_shot, icl, each method) on the test queries:
    # task, query, method, value (exact match), first_token, prediction, answer, kl_to_icl.
    queries: list[dict] = field(default_factory=list)
    # row -> {"exact", "first_token", "exact_minus_icl", "first_token_minus_icl"} -> the
    # 95% bootstrap interval over tasks and queries ({"estimate", "low", "high", ...}).
    intervals: dict[str, dict] = field(default_factory=dict)

    def __str__(self) -> str:
        """The markdown table: zero-shot, ICL and each method per task, and the mean; then
        the harness table (every row on the same queries, with intervals and cost)."""
        table = format_table(summary_table(self))
        return table + "\n" + format_harness_table(harness_rows(self)) if self.intervals else table

    def mean(self, key: str, method: str | None = None) -> float:
        vals = []
        for t in self.tasks.values():
            vals.append(getattr(t.methods[method], key) if method else getattr(t, key))
        return float(np.mean(vals))

    def to_dataframe(self, by_layer: bool = False, by_query: bool = False) -> pd.DataFrame:
        """Tidy: one row per task and method (``task``, ``method``, ``zero_shot``, ``icl``,
        ``task_vector``, ``best_layer``, ``recovered``, ``n_test``, and the harness's
        ``exact_match``, ``recovered_exact``, ``kl_to_icl``, ``extract_s``,
        ``added_latency_s``...), or with ``by_layer`` one row per task, method and layer
        (``dev`` and ``test`` accuracy with the vector there), or with ``by_query`` one row
        per task, test query and row of the table (zero-shot, ICL, each method) with its
        prediction (:attr:`queries`)."""
        if by_query:
            return pd.DataFrame(self.queries)
        rows = []
        for name, t in self.tasks.items():
            for meth, m in t.methods.items():
                if by_layer:
                    rows += [
                        {"task": name, "method": meth, "layer": layer, "dev": d, "test": s}
                        for layer, (d, s) in enumerate(
                            zip(m.dev_by_layer, m.test_by_layer, strict=True)
                        )
                    ]
                else:
                    rows.append(
                        {"task": name, "method": meth, "zero_shot": t.zero_shot, "icl": t.icl,
                         "task_vector": m.task_vector, "best_layer": m.best_layer,
                         "recovered": m.recovered, "n_test": t.n_test,
                         "zero_shot_exact": t.zero_shot_exact, "icl_exact": t.icl_exact,
                         **{key: getattr(m, key) for key in HARNESS_FIELDS}}
                    )  # fmt: skip
        return pd.DataFrame(rows)

    def plot(self, **kwargs):

        return plot_layer_sweep(self, **kwargs)

    def to_dict(self, primary: str | None = None) -> dict:
        """``{"tasks": {task: {zero_shot, icl, task_vector, best_layer, recovered, methods}}}``;
        the top-level ``task_vector`` keys are those of ``primary`` (default: first method)."""
        methods = list(next(iter(self.tasks.values())).methods)
        primary = primary or methods[0]
        tasks = {}
        for name, t in self.tasks.items():
            m = t.methods[primary]
            tasks[name] = {
                "zero_shot": t.zero_shot,
                "icl": t.icl,
                "task_vector": m.task_vector,
                "best_layer": m.best_layer,
                "recovered": m.recovered,
                "n_test": t.n_test,
                "methods": {k: asdict(v) for k, v in t.methods.items()},
                "zero_shot_exact": t.zero_shot_exact,
                "icl_exact": t.icl_exact,
                "zero_shot_kl": t.zero_shot_kl,
                "zero_shot_recovered": t.zero_shot_recovered,
                "zero_shot_recovered_exact": t.zero_shot_recovered_exact,
                "zero_shot_latency_s": t.zero_shot_latency_s,
                "icl_latency_s": t.icl_latency_s,
            }
        summary = {"zero_shot": self.mean("zero_shot"), "icl": self.mean("icl")}
        for key in ("zero_shot_exact", "icl_exact", "zero_shot_kl"):
            summary[key] = self.mean(key)
        for meth in methods:
            summary[meth] = {
                "task_vector": self.mean("task_vector", meth),
                "recovered": self.mean("recovered", meth),
                "recovered_of_means": self.mean("task_vector", meth) / max(self.mean("icl"), 1e-12),
                **{key: self.mean(key, meth) for key in HARNESS_FIELDS},
            }
        return {
            "model": self.model,
            "config": self.config,
            "primary_method": primary,
            "summary": summary,
            "intervals": self.intervals,
            "tasks": tasks,
            "heads": {t: h.to_rows()[:20] for t, h in self.heads.items()},
            "queries": self.queries,
        }

    def harness_table(self) -> list[dict[str, Any]]:
        """One row per row of the harness (zero-shot, ICL, each method), means over tasks:
        exact match and first token with their 95% intervals, the share of ICL recovered,
        KL to ICL, and the cost."""
        return harness_rows(self)


# The harness's per-method columns (means over tasks in the summary and the tidy frame).
HARNESS_FIELDS = ("exact_match", "recovered_exact", "kl_to_icl", "extract_forwards",
                  "extract_prompts", "extract_s", "latency_s", "added_latency_s")  # fmt: skip


def evaluate_task_vectors(
    model: TVModel,
    suite: TaskSuite | list[Task],
    config: VectorsConfig | None = None,
    *,
    progress: bool = True,
    **options: Any,
) -> VectorReport:
    """Zero-shot, ICL and task-vector accuracy per task (the answer token, test split).

    ``config`` (a :class:`~tvlens.extraction.config.VectorsConfig`), or its fields as keyword
    ``options`` (``methods=("hendel", "fv")``, ``k=4``...; their defaults are the config's).
    ``methods`` takes registered names and method objects
    (:class:`~tvlens.extraction.methods.ExtractionMethod`, e.g. ``FunctionVector(scale=2)``).

    For each task: split into train / dev / test; each method extracts from the train split
    (:meth:`~tvlens.extraction.methods.ExtractionMethod.extract`), its hyper-parameters (the
    layer; more where its :meth:`~tvlens.extraction.methods.ExtractionMethod.dev_grid` says)
    are chosen on dev queries, and accuracy is reported on test queries, with what it writes
    (:meth:`~tvlens.extraction.methods.ExtractionMethod.intervention`) at the last token of
    zero-shot prompts. ICL accuracy uses the same test queries with ``k`` demonstrations from
    the train split.

    ``answer_token`` (a config field): one token is scored per answer by the first-token
    columns and the dev choice; ``"only"`` refuses a suite with answers of several tokens
    (checked before anything is computed), ``"first"`` scores their first token (Hendel et al.
    2023; Todd et al. 2023). With ``"first"`` on multi-token answers, greedy exact match of
    the whole answer (``exact_match``) is the verdict metric: the first token of such answers
    can be a bare space or shared by sibling tasks (DESIGN.md §8).

    The harness's columns, on the same test queries for every row: ``exact_match`` (greedy
    decoding writes the answer's tokens; a method is applied on the prompt's forward only
    when all its writes are at the last position, ``steer="first_step"``, and on every
    generated token's forward too when one writes at every position, ``"every_step"``), the
    first token (``task_vector``; the dev choice stays by first token), the share of ICL
    recovered by both (``recovered_exact``, ``recovered``), ``kl_to_icl`` (KL from the ICL
    prompt's next-token distribution at the answer to the row's), the cost (``extract_forwards``,
    ``extract_prompts`` and ``extract_s`` counted around ``extract``; ``latency_s`` and
    ``added_latency_s``: seconds per query of one forward of the zero-shot test prompts with
    and without the intervention, alternated, the fastest of ``LATENCY_REPEATS`` each),
    per-query predictions (:attr:`VectorReport.queries`) and 95% bootstrap intervals over
    tasks and queries of each row's mean and of each row minus ICL
    (:attr:`VectorReport.intervals`).
    """
    if config is not None and options:
        raise ConfigError(f"Pass config= or its fields {sorted(options)}, not both.")
    config = config or VectorsConfig().with_overrides(**options)  # old names too
    methods = config.method_objects()
    k = config.k
    k_given = k is not None
    k = k if k_given else int(model.spec.train_info.get("k", 5))
    tmpl = model.template(config.template)
    split, seed = config.split, config.seed
    tasks = list(suite)
    answer_token = config.answer_token
    if not tasks:
        raise EmptyTaskError("evaluate_task_vectors got no tasks: pass a suite or a list of tasks.")
    for task in tasks:  # every answer, before minutes of extraction
        every = sample_prompts(task, 0, len(task), seed=seed, template=tmpl)
        tokenize_prompts(every, model).require_answer_token(answer_token)
    report = VectorReport(
        model=model.spec.to_dict(),
        config=_report_config(model, methods, config, k, tmpl),
        tasks={},
        vectors={m.name: {} for m in methods},
    )
    for ti, task in enumerate(tqdm(tasks, desc="task vectors", disable=not progress)):
        train, dev, test = task.split(split, seed=seed + ti)
        # The default k (the model's training k) is capped by the train split, which holds
        # the demonstrations and the extraction queries; an explicit k that does not fit is an
        # error (raised by sample_prompts).
        k_task = k if k_given else min(k, len(train) - 1)
        s = seed + 1000 * ti
        zs_dev = sample_prompts(train, 0, len(dev), seed=s, template=tmpl, queries=dev)
        zs_test = sample_prompts(train, 0, len(test), seed=s + 1, template=tmpl, queries=test)
        icl_test = sample_prompts(train, k_task, len(test), seed=s + 2, template=tmpl, queries=test)
        zero = float(evaluate_prompts(model, zs_test)[0].mean())
        icl = float(evaluate_prompts(model, icl_test)[0].mean())
        res = TaskResult(task.name, zero, icl, len(test), k_task)
        mb = config.max_batch
        zs_batch, icl_scores = _score_references(model, res, zs_test, icl_test, mb, report)
        for method in methods:
            ex, cost = _extract_counted(model, method, train, k=k_task, n_extract=config.n_extract,
                                        seed=s + 3, template=tmpl, max_batch=mb,
                                        progress=progress)  # fmt: skip
            if "heads" in ex.extras:
                report.heads[task.name] = ex.extras["heads"]
            r, choice = _score_and_choose(model, method, ex, zs_dev, zs_test, icl, mb, answer_token)
            r.extract_forwards, r.extract_prompts, r.extract_s = cost
            scores = _score_whole_answers(model, method.intervention(model, ex, **choice),
                                          zs_batch, icl_scores, res.icl_exact, r, mb)  # fmt: skip
            report.queries += scores
            res.methods[method.name] = r
            report.vectors[method.name][task.name] = ex.vector
        report.tasks[task.name] = res
    report.intervals = harness_intervals(report.queries, report.config["methods"], seed=seed)
    return report


def _report_config(
    model: TVModel, methods: Sequence[ExtractionMethod], config: VectorsConfig, k: int, tmpl: Any
) -> dict[str, Any]:
    """The report's ``config``: the methods with their labels and options, and the run's
    settings."""
    split, seed, answer_token = config.split, config.seed, config.answer_token
    return {
        "methods": [m.name for m in methods],
        # how each method is shown in tables and figures (the method's own labels)
        "labels": {m.name: m.label for m in methods},
        "columns": {m.name: m.column for m in methods},
        "options": {m.name: m.options() for m in methods},
        "k": k,
        "n_extract": config.n_extract,
        "top_k_heads": config.top_k_heads,
        "fv_scale": config.fv_scale,
        "split": list(split),
        "seed": seed,
        "template": tmpl if isinstance(tmpl, str) else tmpl.name,
        "prompt_bos": model.prompt_bos,
        "answer_token": answer_token,
    }


def _mean(x: Any) -> float:
    return float(np.mean(np.asarray(x, dtype=float)))


def _score_references(
    model: TVModel,
    res: TaskResult,
    zs_test: list[ICLPrompt],
    icl_test: list[ICLPrompt],
    max_batch: int,
    report: VectorReport,
) -> tuple[PromptBatch, AnswerScores]:
    """The zero-shot and ICL rows' exact match, KL and latency into ``res``, their per-query
    records into ``report``; the zero-shot batch and ICL's scores (every method's reference)."""
    zs_batch, icl_batch = tokenize_prompts(zs_test, model), tokenize_prompts(icl_test, model)
    icl_scores = greedy_exact_match(model, icl_batch, batch_size=max_batch)
    zs_scores = greedy_exact_match(model, zs_batch, batch_size=max_batch)
    res.icl_exact, res.zero_shot_exact = _mean(icl_scores.exact), _mean(zs_scores.exact)
    zs_kl = kl_to_reference(icl_scores.logits, zs_scores.logits)
    res.zero_shot_kl = float(zs_kl.mean())
    res.icl_latency_s, res.zero_shot_latency_s = (
        min(_seconds_per_query(model, b, None, max_batch) for _ in range(LATENCY_REPEATS))
        for b in (icl_batch, zs_batch)
    )
    report.queries += _records(icl_scores, ICL, torch.zeros(len(icl_test)))
    report.queries += _records(zs_scores, ZERO_SHOT, zs_kl)
    return zs_batch, icl_scores


def _extract_counted(
    model: TVModel, method: ExtractionMethod, train: Task, **kwargs: Any
) -> tuple[Extracted, tuple[int, int, float]]:
    """``method.extract(model, train, **kwargs)`` and its cost: (forward calls, prompts
    through them, seconds)."""
    t0 = time.perf_counter()
    with count_forwards(model) as calls:
        ex = method.extract(model, train, **kwargs)
    return ex, (calls[0], calls[1], time.perf_counter() - t0)


@contextmanager
def count_forwards(model: TVModel) -> Iterator[list[int]]:
    """``[forward calls, prompts]`` of ``model`` while the block runs, counted at the input
    embedding (every forward of the network reads it once; a backward is not counted)."""
    counts = [0, 0]
    module = _embedding_module(model)

    def hook(mod: Any, args: Any, kwargs: Any) -> None:
        x = args[0] if args else next(iter(kwargs.values()), None)
        counts[0] += 1
        counts[1] += int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim >= 1 else 1

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counts
    finally:
        handle.remove()


def _embedding_module(model: TVModel) -> torch.nn.Module:
    hf = getattr(model.bridge, "original_model", None)
    get = getattr(hf, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    return emb if isinstance(emb, torch.nn.Module) else model.bridge


def steer_for(intervention: Any) -> str:
    """How an intervention is applied while decoding (:mod:`tvlens.evaluation.scoring`):
    ``"every_step"`` when one of its writes is at every position (ICV, I2CL keep their hooks
    on during generation), else ``"first_step"`` (a write at the last position: the prompt
    is steered, as Hendel et al. and Todd et al. patch the prompt and then generate)."""
    writes = getattr(intervention, "writes", intervention)
    return "every_step" if any(w.positions == "all" for w in writes) else "first_step"


def _score_whole_answers(
    model: TVModel,
    intervention: Any,
    zs_batch: PromptBatch,
    icl_scores: AnswerScores,
    icl_exact: float,
    r: VectorMethodResult,
    max_batch: int,
) -> list[dict]:
    """Fill ``r``'s exact match, KL to ICL and latency; the per-query records."""
    writes = getattr(intervention, "writes", intervention)
    # one vector per prompt ([batch, d_model]) needs the whole batch in one forward
    bs = None if any(w.vector.ndim == 2 for w in writes) else max_batch
    ctx = partial(apply_intervention, model, intervention)
    r.steer = steer_for(intervention)
    scores = greedy_exact_match(model, zs_batch, intervention_ctx=ctx, steer=r.steer,
                                batch_size=bs)  # fmt: skip
    kl = kl_to_reference(icl_scores.logits, scores.logits)
    r.exact_match = _mean(scores.exact)
    r.recovered_exact = r.exact_match / icl_exact if icl_exact > 0 else 0.0
    r.kl_to_icl = float(kl.mean())
    # alternated, the fastest of LATENCY_REPEATS each: the same conditions for both
    base, steered = float("inf"), float("inf")
    for _ in range(LATENCY_REPEATS):
        base = min(base, _seconds_per_query(model, zs_batch, None, bs))
        steered = min(steered, _seconds_per_query(model, zs_batch, ctx, bs))
    r.latency_s = steered
    r.added_latency_s = steered - base
    return _records(scores, r.method, kl)


def _seconds_per_query(
    model: TVModel, batch: PromptBatch, ctx: Any, batch_size: int | None
) -> float:
    t0 = time.perf_counter()
    answer_logits(model, batch, ctx, batch_size)
    return (time.perf_counter() - t0) / max(len(batch), 1)


def _records(scores: AnswerScores, row: str, kl: torch.Tensor) -> list[dict]:
    """``scores.records(row)`` with the KL to ICL, and a query key unique within its task
    (the input, ``#2``... on a repeated input) so that rows pair on the same query."""
    out, seen = [], {}
    for rec, d in zip(scores.records(row), kl.tolist(), strict=True):
        n = seen[(rec["task"], rec["query"])] = seen.get((rec["task"], rec["query"]), 0) + 1
        out.append({**rec, "query": rec["query"] if n == 1 else f"{rec['query']}#{n}",
                    "first_token": float(rec["first_token"]), "kl_to_icl": float(d)})  # fmt: skip
    return out


def harness_intervals(
    records: list[dict], methods: list[str], seed: int = 0, n_resamples: int = N_RESAMPLES
) -> dict[str, dict]:
    """95% intervals of each row's mean (exact match, first token) and of each row minus
    ICL, by the hierarchical bootstrap over tasks, then queries within a task."""
    if not records:
        return {}
    frame = pd.DataFrame(records)
    out: dict[str, dict] = {}
    for row in (ZERO_SHOT, ICL, *methods):
        out[row] = {}
        for metric, col in (("exact", "value"), ("first_token", "first_token")):
            f = frame.assign(value=frame[col].astype(float))
            b = hierarchical_bootstrap(f, row, n_resamples=n_resamples, seed=seed)
            out[row][metric] = _interval(b)
            if row != ICL:
                d = hierarchical_bootstrap(f, row, ICL, n_resamples=n_resamples, seed=seed)
                out[row][f"{metric}_minus_icl"] = _interval(d)
    return out


def _interval(b: Any) -> dict[str, Any]:
    low, high = b.interval(0.95)
    return {"estimate": float(b.estimate), "low": float(low), "high": float(high),
            "n_tasks": b.n_tasks, "n_resamples": b.n_resamples}  # fmt: skip


def harness_rows(report: VectorReport) -> list[dict[str, Any]]:
    """The harness table (means over tasks): one row for zero-shot, ICL and each method."""
    ts = list(report.tasks.values())
    iv = report.intervals

    def ci(row: str, key: str) -> tuple[float, float]:
        d = iv.get(row, {}).get(key)
        return (d["low"], d["high"]) if d else (NAN, NAN)

    def avg(xs: list) -> float:
        return float(np.mean(xs)) if xs else NAN

    rows = []
    for row, label in ((ZERO_SHOT, "zero-shot"), (ICL, "ICL")):
        rows.append({
            "row": row, "label": label,
            "exact_match": avg([getattr(t, f"{row}_exact") for t in ts]),
            "exact_ci": ci(row, "exact"),
            "first_token": avg([getattr(t, row) for t in ts]),
            "first_token_ci": ci(row, "first_token"),
            "recovered_exact": 1.0 if row == ICL
            else avg([t.zero_shot_recovered_exact for t in ts]),
            "recovered": 1.0 if row == ICL else avg([t.zero_shot_recovered for t in ts]),
            "exact_minus_icl_ci": ci(row, "exact_minus_icl"),
            "kl_to_icl": 0.0 if row == ICL else avg([t.zero_shot_kl for t in ts]),
            "extract_forwards": 0, "extract_s": 0.0,
            "latency_s": avg([getattr(t, f"{row}_latency_s") for t in ts]),
            "added_latency_s": 0.0 if row == ZERO_SHOT else avg(
                [t.icl_latency_s - t.zero_shot_latency_s for t in ts]),
        })  # fmt: skip
    labels = report.config.get("labels", {})
    for m in report.config["methods"]:
        rs = [t.methods[m] for t in ts]
        rows.append({
            "row": m, "label": labels.get(m, m),
            "exact_match": avg([r.exact_match for r in rs]), "exact_ci": ci(m, "exact"),
            "first_token": avg([r.task_vector for r in rs]),
            "first_token_ci": ci(m, "first_token"),
            "recovered_exact": avg([r.recovered_exact for r in rs]),
            "recovered": avg([r.recovered for r in rs]),
            "exact_minus_icl_ci": ci(m, "exact_minus_icl"),
            "kl_to_icl": avg([r.kl_to_icl for r in rs]),
            "extract_forwards": avg([r.extract_forwards for r in rs]),
            "extract_s": avg([r.extract_s for r in rs]),
            "latency_s": avg([r.latency_s for r in rs]),
            "added_latency_s": avg([r.added_latency_s for r in rs]),
        })  # fmt: skip
    return rows


def format_harness_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`harness_rows`: means over tasks, 95% intervals in brackets."""
    head = ["row", "exact match [95% CI]", "first token [95% CI]", "ICL recovered (exact)",
            "ICL recovered (first)", "exact − ICL [95% CI]", "KL to ICL", "extract fwd",
            "extract s", "added ms/query"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(x: float, nd: int = 2) -> str:
        return "–" if x is None or np.isnan(x) else f"{x:.{nd}f}"

    for r in rows:
        e, ft, dd = r["exact_ci"], r["first_token_ci"], r["exact_minus_icl_ci"]
        cells = [r["label"], f"{f(r['exact_match'])} [{f(e[0])}, {f(e[1])}]",
                 f"{f(r['first_token'])} [{f(ft[0])}, {f(ft[1])}]", f(r["recovered_exact"]),
                 f(r["recovered"]), "–" if r["row"] == ICL else f"[{f(dd[0])}, {f(dd[1])}]",
                 f(r["kl_to_icl"], 3), f(float(r["extract_forwards"]), 0), f(r["extract_s"], 2),
                 f(1000 * r["added_latency_s"], 2)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _score_method(
    model: TVModel,
    method: ExtractionMethod,
    ex: Extracted,
    zs_dev: list[ICLPrompt],
    zs_test: list[ICLPrompt],
    icl: float,
    max_batch: int,
    answer_token: str = "only",
) -> VectorMethodResult:
    """Dev and test accuracy at every choice of the method's dev grid; the test accuracy at
    the choice that is best on dev (the first among ties)."""
    return _score_and_choose(model, method, ex, zs_dev, zs_test, icl, max_batch, answer_token)[0]


def _score_and_choose(
    model: TVModel,
    method: ExtractionMethod,
    ex: Extracted,
    zs_dev: list[ICLPrompt],
    zs_test: list[ICLPrompt],
    icl: float,
    max_batch: int,
    answer_token: str = "only",
) -> tuple[VectorMethodResult, dict[str, Any]]:
    """:func:`_score_method`'s result and the dev grid's choice it was scored at."""
    grid = method.dev_grid(model, ex)
    every_layer = [{"layer": layer} for layer in range(model.n_layers)]
    if isinstance(method, ResidualWrite) and list(grid) == every_layer:
        # One residual write at one layer: every layer from one prefix run (the same numbers
        # as applying its intervention layer by layer).
        vecs, layers = method.layer_vectors(model, ex), list(range(model.n_layers))
        mode, scale = method.mode, method.strength
        dev_c = layer_sweep_correct(model, zs_dev, vecs, layers, mode, scale, max_batch,
                                    answer_token)  # fmt: skip
        test_c = layer_sweep_correct(model, zs_test, vecs, layers, mode, scale, max_batch,
                                     answer_token)  # fmt: skip
    else:
        dev_c, test_c = (
            torch.stack(
                [
                    first_token_correct(model, ps, method.intervention(model, ex, **c), max_batch)
                    for c in grid
                ],
                dim=1,
            )  # fmt: skip
            for ps in (zs_dev, zs_test)
        )
    best, dev_acc = best_on_dev(dev_c)
    test_acc = test_c.float().mean(0)
    chosen = dict(grid[best])
    tv_acc = float(test_acc[best])
    tv = ex.vector
    layer = int(chosen.get("layer", -1))
    if isinstance(method, ResidualWrite):
        if method.one_vector:  # saved at the layer chosen on dev
            tv.layers = (layer,)
        tv.info.update({"best_layer": layer, "mode": method.mode, "scale": method.strength})
    else:
        tv.info.update({"chosen": chosen})
    result = VectorMethodResult(
        method.name,
        layer,
        tv_acc,
        tv_acc / icl if icl > 0 else 0.0,
        [float(x) for x in dev_acc],
        [float(x) for x in test_acc],
        {} if set(chosen) == {"layer"} else chosen,
    )
    return result, dict(grid[best])


@torch.no_grad()
def first_token_correct(
    model: TVModel, prompts: list[ICLPrompt], intervention: Any, max_batch: int
) -> torch.Tensor:
    """Whether the first answer token is the argmax at the last prompt token (left padding),
    with ``intervention`` applied: the score of :func:`layer_sweep_correct`, for any write."""
    out = []
    for start in range(0, len(prompts), max_batch):
        batch = tokenize_prompts(prompts[start : start + max_batch], model, padding_side="left")
        with apply_intervention(model, intervention):
            logits = model(batch.tokens, attention_mask=batch.attention_mask)
        out.append(logits[:, -1].argmax(-1).cpu() == batch.answer_first.cpu())
    return torch.cat(out)


def save_report(report: VectorReport, out: str | Path, primary: str | None = None) -> Path:
    """``out/results.json``, ``out/vectors/{method}/{task}.safetensors``, and, for a report
    with the harness's columns, ``out/harness.md`` (:func:`format_harness_table`) and the
    figures ``out/recovered_heatmap`` (methods × tasks, share of ICL recovered by exact
    match) and ``out/exact_match`` (each row's exact match with its 95% interval)."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for method, by_task in report.vectors.items():
        for task, tv in by_task.items():
            tv.save(out / "vectors" / method / f"{task}.safetensors")
    # Through the result's save(): VectorReport.load(out / "results.json") gives it back.
    path = report.save(out / "results.json", primary=primary)
    if report.intervals:
        (out / HARNESS_FILE).write_text(format_harness_table(harness_rows(report)))
        data = report.to_dict(primary)
        save_figure(plot_recovered_heatmap(data), out / "recovered_heatmap")
        save_figure(plot_exact_match_intervals(data), out / "exact_match")
    return path


HARNESS_FILE = "harness.md"


def summary_table(report: VectorReport) -> list[dict[str, Any]]:
    """One row per task (and a mean row) with zero-shot, ICL and each method's accuracy."""
    rows = []
    for name, t in report.tasks.items():
        row = {"task": name, "zero_shot": t.zero_shot, "icl": t.icl}
        for m, r in t.methods.items():
            row[f"{m}"] = r.task_vector
            # the layer chosen on dev; "all" for a method that writes every layer (ICV, I2CL, LTV)
            row[f"{m}_layer"] = r.best_layer if r.best_layer >= 0 else "all"
        rows.append(row)
    mean = {"task": "mean"}
    for key in rows[0]:
        if key != "task" and not key.endswith("_layer"):
            mean[key] = float(np.mean([r[key] for r in rows]))
    rows.append(mean)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`summary_table` rows."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [
            f"{r.get(k):.3f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
