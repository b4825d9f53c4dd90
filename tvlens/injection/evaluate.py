"""Evaluates task vectors and function vectors end to end: extract on a train split, choose the
layer on a dev split, report accuracy on a test split next to zero-shot and ICL accuracy on the
same test queries. (A model's plain ICL accuracy is :mod:`tvlens.icl_accuracy`.)"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tvlens.configs import VectorsConfig
from tvlens.errors import ConfigError
from tvlens.extraction.function_vectors import HeadTable
from tvlens.extraction.registry import (
    EXTRACTION_METHODS,
    ExtractionRequest,
    get_extraction_method,
)
from tvlens.extraction.vectors import TaskVector
from tvlens.icl_accuracy import evaluate_prompts
from tvlens.injection.sweep import layer_sweep_correct
from tvlens.models.loading import model_and_suite
from tvlens.models.tvmodel import TVModel
from tvlens.plotting import plot_head_aie, plot_layer_sweep, save_figure
from tvlens.results import Result
from tvlens.runs import CONFIG_FILE, TABLE_FILE, VECTORS, prepare_out_dir
from tvlens.runs.portable import portable
from tvlens.tasks.core import Task, TaskSuite
from tvlens.tasks.prompts import sample_prompts


@dataclass
class MethodResult:
    method: str
    best_layer: int
    task_vector: float  # test accuracy at best_layer
    recovered: float  # task_vector / icl (0 when icl is 0)
    dev_by_layer: list[float]
    test_by_layer: list[float]


@dataclass
class TaskResult:
    task: str
    zero_shot: float
    icl: float
    n_test: int
    k: int
    methods: dict[str, MethodResult] = field(default_factory=dict)


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
    methods: tuple[str, ...] | None = None,
    k: int | None = None,
    n_extract: int = 32,
    top_k_heads: int = 10,
    fv_scale: float = 1.0,
    split: tuple[float, float, float] = (0.5, 0.2, 0.3),
    seed: int = 0,
    template: str | None = None,
    max_batch: int = 1024,
    progress: bool = True,
) -> VectorReport:
    """Zero-shot, ICL and task-vector accuracy per task (first answer token, test split).

    For each task: split into train / dev / test; each method of ``methods`` (default: every
    registered one, :mod:`tvlens.extraction.registry`) extracts its vectors from the train
    split and is written at the last token of zero-shot prompts as its registration says
    (the task vector: the mean residual after every layer of ``k``-shot train prompts,
    replacing; the function vector: added, times ``fv_scale``). The layer is
    chosen on dev queries and accuracy is reported on test queries. ICL accuracy uses the
    same test queries with ``k`` demonstrations from the train split.
    """
    methods = tuple(EXTRACTION_METHODS) if methods is None else tuple(methods)
    for method in methods:
        get_extraction_method(method)  # one line naming the registered ones
    k_given = k is not None
    k = k if k_given else int(model.spec.train_info.get("k", 5))
    tmpl = model.template(template)
    tasks = list(suite)
    layers = list(range(model.n_layers))
    report = VectorReport(
        model=model.spec.to_dict(),
        config={
            "methods": list(methods),
            # how each method is shown in tables and figures (the registry's labels)
            "labels": {m: get_extraction_method(m).label for m in methods},
            "columns": {m: get_extraction_method(m).column for m in methods},
            "k": k,
            "n_extract": n_extract,
            "top_k_heads": top_k_heads,
            "fv_scale": fv_scale,
            "split": list(split),
            "seed": seed,
            "template": tmpl if isinstance(tmpl, str) else tmpl.name,
            "prompt_bos": model.prompt_bos,
        },
        tasks={},
        vectors={m: {} for m in methods},
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
            spec = get_extraction_method(method)
            tv, extras = spec.extract(ExtractionRequest(
                model, train, k_task, n_extract, s + 3, tmpl, top_k_heads, max_batch, progress,
            ))  # fmt: skip
            if "heads" in extras:
                report.heads[task.name] = extras["heads"]
            # one vector (a function vector): tried at every layer
            vecs = tv.vectors.expand(len(layers), -1) if spec.one_vector else tv.vectors
            mode = spec.mode
            scale = fv_scale if mode == "add" else 1.0
            dev_c = layer_sweep_correct(model, zs_dev, vecs, layers, mode, scale, max_batch)
            test_c = layer_sweep_correct(model, zs_test, vecs, layers, mode, scale, max_batch)
            dev_acc = dev_c.float().mean(0)
            best = int(torch.argmax(dev_acc))  # first layer among ties
            test_acc = test_c.float().mean(0)
            tv_acc = float(test_acc[best])
            if spec.one_vector:  # saved at the layer chosen on dev
                tv.layers = (best,)
            tv.info.update({"best_layer": best, "mode": mode, "scale": scale})
            report.vectors[method][task.name] = tv
            res.methods[method] = MethodResult(
                method,
                best,
                tv_acc,
                tv_acc / icl if icl > 0 else 0.0,
                [float(x) for x in dev_acc],
                [float(x) for x in test_acc],
            )
        report.tasks[task.name] = res
    return report


def save_report(report: VectorReport, out: str | Path, primary: str | None = None) -> Path:
    """``out/results.json`` and ``out/vectors/{method}/{task}.safetensors``."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for method, by_task in report.vectors.items():
        for task, tv in by_task.items():
            tv.save(out / "vectors" / method / f"{task}.safetensors")
    path = out / "results.json"
    path.write_text(json.dumps(portable(report.to_dict(primary)), indent=2) + "\n")
    return path


def summary_table(report: VectorReport) -> list[dict[str, Any]]:
    """One row per task (and a mean row) with zero-shot, ICL and each method's accuracy."""
    rows = []
    for name, t in report.tasks.items():
        row = {"task": name, "zero_shot": t.zero_shot, "icl": t.icl}
        for m, r in t.methods.items():
            row[f"{m}"] = r.task_vector
            row[f"{m}_layer"] = r.best_layer
        rows.append(row)
    mean = {"task": "mean"}
    for key in rows[0]:
        if key != "task" and not key.endswith("_layer"):
            mean[key] = float(np.mean([r[key] for r in rows]))
    rows.append(mean)
    return rows


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
    :class:`~tvlens.configs.VectorsConfig`. ``suite`` defaults to the suite the model was
    trained on.
    """

    if config is not None and options:
        raise ConfigError(f"Pass config= or its fields {sorted(options)}, not both.")
    config = config or VectorsConfig().with_overrides(**options)  # old names too
    out = prepare_out_dir(out, VECTORS)
    model, suite = model_and_suite(model, suite, revision, device)
    methods = config.methods
    kwargs = {k: v for k, v in asdict(config).items() if k != "methods"}
    report = evaluate_task_vectors(model, suite, methods=methods, progress=progress, **kwargs)
    save_report(report, out, primary=methods[0])
    data = report.to_dict(methods[0])
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
