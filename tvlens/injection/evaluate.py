"""Evaluates task vectors and function vectors end to end: extract on a train split, choose the
layer on a dev split, report accuracy on a test split next to zero-shot and ICL accuracy on the
same test queries. (A model's plain ICL accuracy is :mod:`tvlens.evaluation.icl`.)"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tvlens.errors import ConfigError, EmptyTaskError
from tvlens.evaluation.icl import evaluate_prompts
from tvlens.extraction.config import VectorsConfig
from tvlens.extraction.function_vectors import HeadTable
from tvlens.extraction.methods import Extracted, ExtractionMethod, ResidualWrite
from tvlens.extraction.vectors import TaskVector
from tvlens.injection.intervention import apply_intervention
from tvlens.injection.sweep import best_on_dev, layer_sweep_correct
from tvlens.models.loading import model_and_suite
from tvlens.models.tvmodel import TVModel
from tvlens.plotting import plot_head_aie, plot_layer_sweep, save_figure
from tvlens.results import Result
from tvlens.runs import CONFIG_FILE, TABLE_FILE, VECTORS, prepare_out_dir, tidy_on_error
from tvlens.tasks.core import Task, TaskSuite
from tvlens.tasks.prompts import ICLPrompt, sample_prompts, tokenize_prompts


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


@dataclass
class TaskResult:
    task: str
    zero_shot: float
    icl: float
    n_test: int
    k: int
    methods: dict[str, VectorMethodResult] = field(default_factory=dict)


@dataclass
class VectorReport(Result):
    model: dict
    config: dict
    tasks: dict[str, TaskResult]
    vectors: dict[str, dict[str, TaskVector]] = field(default_factory=dict)  # method -> task
    heads: dict[str, HeadTable] = field(default_factory=dict)  # task -> FV head table

    def __str__(self) -> str:
        """The markdown table: zero-shot, ICL and each method per task, and the mean."""
        return format_table(summary_table(self))

    def mean(self, key: str, method: str | None = None) -> float:
        vals = []
        for t in self.tasks.values():
            vals.append(getattr(t.methods[method], key) if method else getattr(t, key))
        return float(np.mean(vals))

    def to_dataframe(self, by_layer: bool = False) -> pd.DataFrame:
        """Tidy: one row per task and method (``task``, ``method``, ``zero_shot``, ``icl``,
        ``task_vector``, ``best_layer``, ``recovered``, ``n_test``), or with ``by_layer`` one
        row per task, method and layer (``dev`` and ``test`` accuracy with the vector there)."""
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
                         "recovered": m.recovered, "n_test": t.n_test}
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
            }
        summary = {"zero_shot": self.mean("zero_shot"), "icl": self.mean("icl")}
        for meth in methods:
            summary[meth] = {
                "task_vector": self.mean("task_vector", meth),
                "recovered": self.mean("recovered", meth),
                "recovered_of_means": self.mean("task_vector", meth) / max(self.mean("icl"), 1e-12),
            }
        return {
            "model": self.model,
            "config": self.config,
            "primary_method": primary,
            "summary": summary,
            "tasks": tasks,
            "heads": {t: h.to_rows()[:20] for t, h in self.heads.items()},
        }


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

    ``answer_token`` (a config field): one token is scored per answer; ``"only"`` refuses a
    suite with answers of several tokens (checked before anything is computed), ``"first"``
    scores their first token (Hendel et al. 2023; Todd et al. 2023).
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
        config={
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
        },
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
        for method in methods:
            ex = method.extract(model, train, k=k_task, n_extract=config.n_extract, seed=s + 3,
                                template=tmpl, max_batch=config.max_batch,
                                progress=progress)  # fmt: skip
            if "heads" in ex.extras:
                report.heads[task.name] = ex.extras["heads"]
            res.methods[method.name] = _score_method(
                model, method, ex, zs_dev, zs_test, icl, config.max_batch, answer_token
            )
            report.vectors[method.name][task.name] = ex.vector
        report.tasks[task.name] = res
    return report


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
                    _first_token_correct(model, ps, method.intervention(model, ex, **c), max_batch)
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
    return VectorMethodResult(
        method.name,
        layer,
        tv_acc,
        tv_acc / icl if icl > 0 else 0.0,
        [float(x) for x in dev_acc],
        [float(x) for x in test_acc],
        {} if set(chosen) == {"layer"} else chosen,
    )


@torch.no_grad()
def _first_token_correct(
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
    """``out/results.json`` and ``out/vectors/{method}/{task}.safetensors``."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for method, by_task in report.vectors.items():
        for task, tv in by_task.items():
            tv.save(out / "vectors" / method / f"{task}.safetensors")
    # Through the result's save(): VectorReport.load(out / "results.json") gives it back.
    return report.save(out / "results.json", primary=primary)


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


@tidy_on_error
def run_task_vectors(
    model: TVModel | str,
    out: str | Path,
    suite: TaskSuite | str | None = None,
    config: VectorsConfig | None = None,
    revision: str | None = None,
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> VectorReport:
    """What ``tvlens vectors`` runs: evaluate, then write ``out/results.json``, the vectors
    (``out/vectors/{method}/{task}.safetensors``), ``out/table.md``, ``out/config.json`` and the
    figures ``out/layer_sweep.{html,png}`` (and ``out/head_aie.{html,png}`` for FV).

    ``config``, or its fields as keyword ``options`` (``methods="all"``, ``k=4``...): a
    :class:`~tvlens.extraction.config.VectorsConfig`. ``suite`` defaults to the suite the model was
    trained on.
    """

    if config is not None and options:
        raise ConfigError(f"Pass config= or its fields {sorted(options)}, not both.")
    config = config or VectorsConfig().with_overrides(**options)  # old names too
    out = prepare_out_dir(out, VECTORS)
    model, suite = model_and_suite(model, suite, revision, device)
    report = evaluate_task_vectors(model, suite, config, progress=progress)
    primary = config.method_names()[0]
    save_report(report, out, primary=primary)
    data = report.to_dict(primary)
    (out / CONFIG_FILE).write_text(
        json.dumps(
            {
                **config.to_dict(),
                "model": model.spec.to_dict(),
                "suite": getattr(suite, "spec", {}),
                **report.config,
            },
            indent=2,
        )
        + "\n"
    )
    (out / TABLE_FILE).write_text(format_table(summary_table(report)))
    save_figure(plot_layer_sweep(data), out / "layer_sweep")
    if report.heads:
        mean_aie = torch.stack([h.aie for h in report.heads.values()]).mean(0)
        save_figure(
            plot_head_aie(mean_aie, "Function-vector heads: AIE averaged over tasks"),
            out / "head_aie",
        )
    return report


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
