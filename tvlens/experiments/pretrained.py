"""The seed papers' pretrained-model experiments on any model tvlens loads:

- :func:`vector_table`: zero-shot, ICL, Hendel task vector and Todd function vector per task
  (Hendel et al. 2023, Table 1), with the layer curves;
- :func:`task_decodability_table`: task decodability by layer with the Null task, and TD
  against ICL accuracy across tasks (Han et al. 2025);
- :func:`head_comparison`: exact and attribution patching of every head against the
  function-vector AIE ranking (Todd et al. 2023), overlap of the top 10;
- :func:`layer_finetuning`: early- against late-layer fine-tuning with TD before and after
  (Han et al. 2025, Table 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tvlens.errors import TVLensError
from tvlens.experiments.configs import (
    DecodabilityConfig,
    HeadsConfig,
    LayerFinetuneConfig,
    VectorTableConfig,
)
from tvlens.experiments.finetune import finetune_layers
from tvlens.extraction.function_vectors import function_vector
from tvlens.extraction.registry import get_extraction_method
from tvlens.extraction.residual import activations_at_positions
from tvlens.injection.evaluate import (
    HARNESS_FIELDS,
    VectorReport,
    evaluate_task_vectors,
    harness_intervals,
    save_report,
)
from tvlens.models.loading import TVModel, as_model
from tvlens.patching.runner import run_patching
from tvlens.plotting import (
    plot_finetune,
    plot_head_aie,
    plot_layer_sweep,
    plot_td_by_layer,
    plot_td_vs_accuracy,
    save_figure,
)
from tvlens.plotting.tables import plot_table_bars
from tvlens.probing.family import TokenFamily
from tvlens.probing.layers import LayerTD
from tvlens.probing.measures import task_decodability
from tvlens.probing.series import TDSeries, correlation
from tvlens.results import Report
from tvlens.runs import (
    PRETRAINED_DECODABILITY,
    PRETRAINED_HEADS,
    PRETRAINED_VECTORS,
    prepare_out_dir,
    tidy_on_error,
    write_json,
)
from tvlens.runs.portable import local
from tvlens.tasks.core import TaskSuite
from tvlens.tasks.prompts import sample_prompts, tokenize_prompts
from tvlens.tasks.registry import get_suite
from tvlens.tasks.synthetic import null_task

# Function-vector abstractive tasks whose answers are a word or a letter (first-token scoring
# is meaningful); ag_news, commonsense_qa, sentiment, word_length and country-currency are not
# in it (a label set of a few classes, or long answers).
FV_SHORT_TASKS = (
    "antonym",
    "capitalize_first_letter",
    "country-capital",
    "english-french",
    "english-german",
    "english-spanish",
    "landmark-country",
    "lowercase_first_letter",
    "next_item",
    "person-sport",
    "present-past",
    "singular-plural",
)


def sized_suite(
    suite: TaskSuite, n_examples: int | None = None, tasks: Sequence[str] | None = None, seed=0
) -> TaskSuite:
    """``suite`` restricted to ``tasks`` and each task to at most ``n_examples`` pairs (a
    seeded sample, input duplicates dropped first) so that its splits have a set size."""
    chosen = suite.select(list(tasks)) if tasks is not None else suite
    out = []
    for i, t in enumerate(chosen):
        seen: set[str] = set()
        unique = [e for e in t.examples if not (e.input in seen or seen.add(e.input))]
        if n_examples is not None and len(unique) > n_examples:
            idx = np.random.default_rng(seed + i).choice(len(unique), n_examples, replace=False)
            unique = [unique[j] for j in sorted(idx)]
        out.append(replace(t, examples=tuple(unique)))
    return replace(chosen, tasks=tuple(out), spec={**chosen.spec, "n_examples": n_examples})


def with_bos(model: TVModel, bos: str | int) -> TVModel:
    """The same loaded model (shared weights) with another BOS policy (``"none"``, a token)."""
    return TVModel(model.bridge, model.spec, bos=bos)


# ---------------------------------------------------------------------------- 1. vectors


class VectorTable(Report):
    """:func:`vector_table`'s result (``out/vectors.json``): ``to_dataframe()`` has a row per
    task (zero-shot, ICL, each method's accuracy and layer); ``plot()`` their bars."""

    def markdown(self) -> str:
        """The table as ``out/table.md`` holds it."""
        d = self.data
        cfg = d["config"]
        return vector_markdown(d["rows"], cfg["methods"], d["summary"], cfg.get("columns"))

    def save_to(self, out: Path) -> VectorTable:
        """Write ``out/vectors.json`` and ``out/table.md``; returns itself."""
        self.save(out / "vectors.json")  # VectorTable.load reads it back
        (out / "table.md").write_text(self.markdown())
        return self

    def __str__(self) -> str:
        """``out/table.md`` and the summary (means and recovery)."""
        return self.markdown() + "\n" + json.dumps(self.data["summary"], indent=1)

    def plot(self, **kwargs: Any):
        ys = ["zero_shot", "icl", *self.data["config"]["methods"]]
        kwargs.setdefault("title", "Accuracy per task: zero-shot, ICL and the vectors")
        return plot_table_bars(self.rows(), "task", ys, y_title="accuracy", y_range=(0.0, 1.05),
                               **kwargs)  # fmt: skip


class DecodabilityTable(Report):
    """:func:`task_decodability_table`'s result (``out/td.json``): ``to_dataframe()`` has a row
    per task (TD at its suite's peak layer against ICL accuracy); ``plot()`` their bars."""

    def __str__(self) -> str:
        lines = []
        for label, r in self.data["suites"].items():
            c = r["td_vs_icl"]
            lines.append(f"{label}: peak TD {r['peak_td']:.2f} at layer {r['peak_layer']} "
                         f"(chance {r['chance']:.2f}); TD vs ICL r={c['pearson_r']}, "
                         f"R2={c['r2']}")  # fmt: skip
        return "\n".join([*lines, f"pooled: {self.data['pooled_td_vs_icl']}"])

    def plot(self, **kwargs: Any):
        kwargs.setdefault("title", "TD at the peak layer and ICL accuracy per task")
        return plot_table_bars(self.rows(), "task", ["td_at_peak", "icl_accuracy"],
                               y_range=(0.0, 1.05), **kwargs)  # fmt: skip

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "suite": label,
                "task": task,
                "peak_layer": r["peak_layer"],
                "td_at_peak": td,
                "icl_accuracy": r["icl_accuracy"][task],
            }  # fmt: skip
            for label, r in self.data["suites"].items()
            for task, td in r["td_at_peak"].items()
        ]


class HeadComparison(Report):
    """:func:`head_comparison`'s result (``out/heads.json``): ``to_dataframe()`` has a row per
    task (clean / corrupted metric, attribution-vs-exact Spearman, top-head overlaps);
    ``plot()`` the overlaps."""

    def __str__(self) -> str:
        top = self.data["config"]["top"]
        return "\n".join(f"{t}: {json.dumps(r[f'overlap_top{top}'])}, Spearman "
                         f"{r['spearman_attribution_vs_exact']:.2f}"
                         for t, r in self.data["tasks"].items())  # fmt: skip

    def plot(self, **kwargs: Any):
        ys = ["exact_vs_aie", "attribution_vs_aie", "exact_vs_attribution"]
        kwargs.setdefault("title", f"Top-{self.data['config']['top']} heads in common")
        return plot_table_bars(self.rows(), "task", ys, y_title="heads", **kwargs)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for task, r in self.data["tasks"].items():
            overlaps = next(v for k, v in r.items() if k.startswith("overlap_top"))
            out.append({"task": task, "clean_metric": r["clean_metric"],
                        "corrupted_metric": r["corrupted_metric"],
                        "spearman_attribution_vs_exact": r["spearman_attribution_vs_exact"],
                        **overlaps})  # fmt: skip
        return out


class FinetuneTable(Report):
    """:func:`layer_finetuning`'s result (``out/metrics.json``): ``to_dataframe()`` has a row
    per fine-tuning (first or last blocks), before and after; ``plot()`` TD by layer."""

    def plot(self, **kwargs: Any):
        return plot_finetune(self.data, **kwargs)

    def __str__(self) -> str:
        """``out/table.md``: TD and accuracy before and after each fine-tuning."""
        return self.data["table"]


def named_suites(
    suites: Mapping[str, TaskSuite] | TaskSuite | str | Sequence[str],
    tasks: Sequence[str] | None = None,
    n_examples: int | None = None,
) -> dict[str, TaskSuite]:
    """Suites by label: a mapping or a suite as they are, or suite names / folders, each
    loaded through :func:`sized_suite` (repeated inputs dropped); with ``tasks`` or
    ``n_examples``, every suite keeps only those tasks, at most that many pairs each."""
    if isinstance(suites, Mapping | TaskSuite):
        named = dict(suites) if isinstance(suites, Mapping) else {suites.name: suites}
        if tasks is None and n_examples is None:
            return named
    else:
        loaded = [get_suite(n) for n in ([suites] if isinstance(suites, str) else suites)]
        named = {s.name: s for s in loaded}
    out = {}
    for label, s in named.items():
        keep = [t for t in s.names if tasks is None or t in tasks]
        if not keep:
            raise TVLensError(f"None of the tasks {list(tasks or [])} is in suite {s.name!r}.")
        out[label] = sized_suite(s, n_examples, keep)
    return out


@tidy_on_error
def vector_table(
    model: TVModel | str,
    suites: Mapping[str, TaskSuite] | TaskSuite | str | Sequence[str],
    out: str | Path,
    config: VectorTableConfig | None = None,
    *,
    tasks: Sequence[str] | None = None,
    n_examples: int | None = None,
    bos: str = "auto",
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> VectorTable:
    """Hendel et al.'s Table 1 on ``model``: per task zero-shot, ICL, task vector (layer
    chosen on dev) and function vector accuracy on held-out test queries, each scoring the
    answer's first token (``answer_token="first"``, recorded in the config, as the paper's
    table does for multi-token answers). Writes
    ``out/{suite}/results.json`` (+ vectors, ``layer_sweep.html``), ``out/table.md`` and
    ``out/vectors.json``; returns the latter's content. Options: :class:`VectorTableConfig`
    (``config=``, or its fields as keyword arguments). ``model`` may be a name or folder
    (loaded on ``device`` with ``bos``), ``suites`` names (see :func:`named_suites` for
    ``tasks`` and ``n_examples``)."""

    cfg = (config or VectorTableConfig()).with_overrides(**options)
    out = prepare_out_dir(out, PRETRAINED_VECTORS)  # before the model is loaded
    model = as_model(model, device=device, bos=bos)
    suites = named_suites(suites, tasks, n_examples)
    methods = cfg.method_names()
    out = Path(out)
    rows, per_suite, columns, records = [], {}, {}, []
    for label, suite in suites.items():
        rep = evaluate_task_vectors(
            model, suite, cfg.with_overrides(answer_token="first"), progress=progress
        )  # Hendel et al.'s Table 1 scores the first token, said so in the config
        columns.update(rep.config["columns"])
        save_report(rep, out / label, primary=methods[0])
        data = rep.to_dict(methods[0])
        save_figure(
            plot_layer_sweep(data, title=f"{model.name}, {label}: accuracy by layer"),
            out / label / "layer_sweep",
        )
        per_suite[label] = {"config": rep.config, "summary": data["summary"],
                            "intervals": rep.intervals, "cost": suite_cost(rep)}  # fmt: skip
        rows += vector_rows(rep, label)
        records += suite_records(rep.queries, label)
    result = {
        "model": model.spec.to_dict(),
        "config": {
            "k": cfg.k,
            "n_extract": cfg.n_extract,
            "top_k_heads": cfg.top_k_heads,
            "seed": cfg.seed,
            "split": list(cfg.split),
            "template": model.template(cfg.template),
            "prompt_bos": model.prompt_bos,
            "methods": list(methods),
            "columns": columns,  # the methods' own table headers
            "answer_token": "first",
        },  # fmt: skip
        "suites": per_suite,
        "rows": rows,
        "summary": summarize_vectors(rows, methods),
    }
    _harness_summary(result["summary"], records, list(per_suite.values()), methods, cfg.seed)
    return VectorTable(result).save_to(out)


def vector_rows(rep: VectorReport, label: str) -> list[dict[str, Any]]:
    """One row per task of a report: zero-shot, ICL and each method's first-token accuracy
    and layer, and the harness's exact match, share of ICL (exact) and KL to ICL (the
    deterministic columns; the timings are per suite, :func:`suite_cost`)."""
    rows = []
    for name, t in rep.tasks.items():
        row = {"suite": label, "task": name, "n_test": t.n_test, "zero_shot": t.zero_shot,
               "icl": t.icl, "zero_shot_exact": t.zero_shot_exact, "icl_exact": t.icl_exact,
               "zero_shot_kl": t.zero_shot_kl}  # fmt: skip
        for m, r in t.methods.items():
            row[m] = r.task_vector
            row[f"{m}_layer"] = r.best_layer
            row[f"{m}_exact"] = r.exact_match
            row[f"{m}_recovered_exact"] = r.recovered_exact
            row[f"{m}_kl"] = r.kl_to_icl
        rows.append(row)
    return rows


COST_FIELDS = tuple(f for f in HARNESS_FIELDS if f.startswith("extract_") or "latency" in f)


def suite_cost(rep: VectorReport) -> dict[str, Any]:
    """Each method's cost averaged over the suite's tasks (forward passes and seconds to
    extract, seconds per query and added latency), and the ICL and zero-shot seconds per
    query; ``n_tasks`` to pool suites."""
    ts = list(rep.tasks.values())
    out: dict[str, Any] = {"n_tasks": len(ts)}
    for key in ("zero_shot_latency_s", "icl_latency_s"):
        out[key] = float(np.mean([getattr(t, key) for t in ts]))
    for m in rep.config["methods"]:
        out[m] = {f: float(np.mean([getattr(t.methods[m], f) for t in ts])) for f in COST_FIELDS}
    return out


def suite_records(records: list[dict], label: str) -> list[dict]:
    """Per-query records with the task named ``suite/task`` (suites pooled by task)."""
    return [{**r, "task": f"{label}/{r['task']}"} for r in records]


def _harness_summary(
    summary: dict, records: list[dict], suites: list[dict], methods: Sequence[str], seed: int
) -> None:
    """Add to ``summary`` the pooled 95% intervals (over every suite's tasks and queries)
    and the cost averaged over tasks (suites weighted by their number of tasks)."""
    if records:
        summary["intervals"] = harness_intervals(records, list(methods), seed=seed)
    costs = [s["cost"] for s in suites if "cost" in s]
    if not costs:
        return
    w = np.array([c["n_tasks"] for c in costs], dtype=float)
    cost: dict[str, Any] = {}
    for key in ("zero_shot_latency_s", "icl_latency_s"):
        cost[key] = float(np.average([c[key] for c in costs], weights=w))
    for m in methods:
        cost[m] = {f: float(np.average([c[m][f] for c in costs], weights=w))
                   for f in COST_FIELDS}  # fmt: skip
    summary["cost"] = cost


@tidy_on_error
def combine_vector_tables(parts: Sequence[str | Path], out: str | Path) -> VectorTable:
    """One table from several ``vector_table`` outputs of the same model and settings (a run
    split over processes): rows concatenated, summary recomputed; writes ``out/vectors.json``
    and ``out/table.md``."""

    loaded = [load_results(Path(p) / "vectors.json") for p in parts]
    out = prepare_out_dir(out, PRETRAINED_VECTORS)
    first = loaded[0]
    for other in loaded[1:]:
        a = {k: v for k, v in first["config"].items()}
        b = {k: v for k, v in other["config"].items()}
        if a != b or other["model"]["name"] != first["model"]["name"]:
            raise TVLensError(f"Cannot combine runs with different settings: {a} vs {b}.")
    rows = [r for part in loaded for r in part["rows"]]
    methods = first["config"]["methods"]
    result = {
        "model": first["model"],
        "config": first["config"],
        "parts": [str(p) for p in parts],
        "suites": {k: v for part in loaded for k, v in part["suites"].items()},
        "rows": rows,
        "summary": summarize_vectors(rows, methods),
    }
    records: list[dict] = []
    for i, (p, part) in enumerate(zip(parts, loaded, strict=True)):
        seen = {r["task"] for r in records}
        for label in part["suites"]:
            saved = Path(p) / label / "results.json"
            if saved.is_file():
                new = suite_records(json.loads(saved.read_text()).get("queries", []), label)
                # a task scored by two parts is two tasks of the pooled bootstrap
                records += [{**r, "task": f"{r['task']} ({i})"} if r["task"] in seen else r
                            for r in new]  # fmt: skip
    every_suite = [v for part in loaded for v in part["suites"].values()]
    _harness_summary(result["summary"], records, every_suite, methods, first["config"]["seed"])
    out = Path(out)
    return VectorTable(result).save_to(out)


def summarize_vectors(rows: list[dict], methods: Sequence[str], icl_min: float = 0.4) -> dict:
    """Means over all tasks (with the harness's exact match, share of ICL and KL where the
    rows have them), and recovery (vector / ICL) over the tasks where ICL ≥ ``icl_min``
    (both the ratio of means and the mean of per-task ratios)."""
    out: dict[str, Any] = {"n_tasks": len(rows)}
    for key in ("zero_shot", "icl", *methods):
        out[key] = float(np.mean([r[key] for r in rows]))
    # the harness's columns (tables written before them have none)
    harness = ["zero_shot_exact", "icl_exact", "zero_shot_kl"]
    harness += [f"{m}_{c}" for m in methods for c in ("exact", "recovered_exact", "kl")]
    for key in harness:
        if all(key in r for r in rows):
            out[key] = float(np.mean([r[key] for r in rows]))
    good = [r for r in rows if r["icl"] >= icl_min]
    out[f"tasks_with_icl_ge_{icl_min}"] = [r["task"] for r in good]
    for m in methods:
        if good:
            out[f"{m}_recovered_of_means_icl_ge_{icl_min}"] = float(
                np.mean([r[m] for r in good]) / np.mean([r["icl"] for r in good])
            )
            out[f"{m}_recovered_mean_icl_ge_{icl_min}"] = float(
                np.mean([min(r[m] / r["icl"], 10.0) for r in good])
            )
        out[f"{m}_recovered_of_means"] = out[m] / max(out["icl"], 1e-12)
    return out


def vector_markdown(
    rows: list[dict], methods: Sequence[str], summary: dict, columns: dict | None = None
) -> str:
    """``columns``: each method's table header (tables saved before it was written: the
    registered method's)."""
    names = columns or {m: get_extraction_method(m).column for m in methods}
    head = ["suite", "task", "n test", "zero-shot", "ICL"] + [names.get(m, m) for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["suite"], r["task"], str(r["n_test"]), f"{r['zero_shot']:.2f}"]
        # the layer chosen on dev, for a method that chooses one (-1: it writes every layer)
        cells += [f"{r['icl']:.2f}"] + [
            f"{r[m]:.2f}" + (f" ({r[m + '_layer']})" if r[m + "_layer"] >= 0 else "")
            for m in methods
        ]
        lines.append("| " + " | ".join(cells) + " |")
    mean = ["**mean**", f"{summary['n_tasks']} tasks", "", f"{summary['zero_shot']:.2f}",
            f"{summary['icl']:.2f}"] + [f"{summary[m]:.2f}" for m in methods]  # fmt: skip
    lines.append("| " + " | ".join(mean) + " |")
    if "intervals" in summary:
        lines += ["", harness_markdown(summary, methods, names)]
    return "\n".join(lines) + "\n"


def harness_markdown(summary: dict, methods: Sequence[str], names: Mapping[str, str]) -> str:
    """Every row on the same test queries, means over all tasks: exact match and first token
    with 95% bootstrap intervals over tasks and queries, the share of ICL recovered (exact
    match, ratio of means), the interval of the row minus ICL, KL to ICL, and the cost."""
    iv, cost = summary["intervals"], summary.get("cost", {})
    head = ["", "exact match [95% CI]", "first token [95% CI]", "share of ICL (exact)",
            "exact − ICL [95% CI]", "KL to ICL", "extract: forwards", "extract: s",
            "added ms / query"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    nan = float("nan")
    icl = summary.get("icl_exact", nan)

    def ci(d: dict) -> str:
        return f"{d['estimate']:.2f} [{d['low']:.2f}, {d['high']:.2f}]"

    for row in ("zero_shot", "icl", *methods):
        label = {"zero_shot": "zero-shot", "icl": "ICL"}.get(row, names.get(row, row))
        exact = summary.get("icl_exact" if row == "icl" else f"{row}_exact", float("nan"))
        kl = 0.0 if row == "icl" else summary.get(f"{row}_kl", float("nan"))
        c = cost.get(row, {})
        diff = "–" if row == "icl" else ci(iv[row]["exact_minus_icl"])
        if row == "zero_shot":
            added = 0.0
        elif row == "icl":  # the demonstrations' cost at inference
            added = cost.get("icl_latency_s", nan) - cost.get("zero_shot_latency_s", nan)
        else:
            added = c.get("added_latency_s", nan)
        cells = [label, ci(iv[row]["exact"]), ci(iv[row]["first_token"]),
                 f"{exact / icl:.2f}" if icl > 0 else "–", diff, f"{kl:.3f}",
                 f"{c.get('extract_forwards', 0):.0f}", f"{c.get('extract_s', 0.0):.2f}",
                 f"{1000 * added:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- 2. TD


@tidy_on_error
def task_decodability_table(
    model: TVModel | str,
    suites: Mapping[str, TaskSuite] | TaskSuite | str | Sequence[str],
    out: str | Path,
    config: DecodabilityConfig | None = None,
    *,
    tasks: Sequence[str] | None = None,
    n_examples: int | None = None,
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> DecodabilityTable:
    """Task decodability (leave-one-out ``knn_k``-NN over the last query token's residual,
    Null task included) at every layer, per suite, and each task's TD at the peak layer
    against its ICL accuracy on the same prompts, with R².

    Accuracy is the first answer token's, except in a suite where every answer starts with
    the same token (SmolLM2 writes " 01101" as a space, then one token per digit): there it
    is greedy exact match of the whole answer. One pass per batch gives both (the answer is
    appended; the query state does not see it). Writes ``out/{suite}/td.json`` with
    ``td_by_layer`` / ``td_vs_accuracy`` figures, and ``out/td.json``. Options:
    :class:`DecodabilityConfig` (``config=``, or its fields as keyword arguments); ``model``
    and ``suites`` as in :func:`vector_table`."""

    cfg = (config or DecodabilityConfig()).with_overrides(**options)
    out = prepare_out_dir(out, PRETRAINED_DECODABILITY)  # before the model is loaded
    model = as_model(model, device=device)
    suites = named_suites(suites, tasks, n_examples)
    k, n_prompts, seed, knn_k, batch_size = (
        cfg.k,
        cfg.n_prompts,
        cfg.seed,
        cfg.knn_k,
        cfg.batch_size,
    )
    out = Path(out)
    tmpl = model.template(cfg.template)
    names_resid = model.resid_hooks("post")
    result: dict[str, Any] = {
        "model": model.spec.to_dict(),
        "config": {
            "k": k,
            "n_prompts": n_prompts,
            "seed": seed,
            "template": tmpl,
            "knn_k": knn_k,
            "prompt_bos": model.prompt_bos,
        },  # fmt: skip
        "suites": {},
    }
    all_td, all_acc = [], []
    for label, suite in suites.items():
        tasks = [*suite, null_task(suite)]
        null = tasks[-1].name
        h, labels, first, exact, first_ids = _suite_states(
            model, tasks, label, k, n_prompts, seed, tmpl, batch_size, names_resid, progress
        )
        measure = "exact_match" if len(first_ids) <= 1 else "first_token"
        acc = {t.name: (exact if measure == "exact_match" else first)[t.name] for t in suite}
        res = LayerTD(list(range(model.n_layers)), [], [], [], tasks=[t.name for t in tasks],
                      n_prompts=n_prompts, k=k)  # fmt: skip
        for layer in res.layers:
            td = task_decodability(h[layer], labels, k=knn_k)
            res.td.append(td.overall)
            res.per_task.append(td.per_task)
        cfg = {**result["config"], "suite": suite.spec, "accuracy": measure}
        data = TDSeries(model.name, [model.name], [None], [res], [acc], cfg).to_dict()
        (out / label).mkdir(parents=True, exist_ok=True)
        write_json(out / label / "td.json", data)
        save_figure(plot_td_by_layer(data, title=f"{model.name}, {label}: TD by layer"),
                    out / label / "td_by_layer")  # fmt: skip
        save_figure(plot_td_vs_accuracy(data, title=f"{model.name}, {label}: TD vs ICL"),
                    out / label / "td_vs_accuracy")  # fmt: skip
        peak = res.peak_layer
        per_task_td = {t.name: res.per_task[peak][t.name] for t in suite}
        all_td += list(per_task_td.values())
        all_acc += list(acc.values())
        result["suites"][label] = {
            "td_by_layer": res.td,
            "peak_layer": peak,
            "peak_td": res.td[peak],
            "chance": 1 / len(tasks),
            "null_td_at_peak": res.per_task[peak][null],
            "td_at_peak": per_task_td,
            "accuracy_measure": measure,
            "icl_accuracy": acc,
            "icl_first_token": {t.name: first[t.name] for t in suite},
            "icl_exact_match": {t.name: exact[t.name] for t in suite},
            "td_vs_icl": correlation(list(per_task_td.values()), list(acc.values())),
        }
    result["pooled_td_vs_icl"] = correlation(all_td, all_acc)
    table = DecodabilityTable(result)
    table.save(out / "td.json")  # DecodabilityTable.load reads it back
    return table


def _suite_states(model: TVModel, tasks: list, label: str, k: int, n_prompts: int, seed: int,
                  tmpl: Any, batch_size: int, names_resid: list[str],
                  progress: bool) -> tuple[torch.Tensor, list[str], dict, dict, set]:  # fmt: skip
    """Each task's prompts once, answer appended (the last task is the suite's Null task): the
    residual at the last query token after every block ``[layer, n, d]``, each prompt's task,
    each task's first-token and exact-match accuracy, and the first answer tokens seen (the
    Null task's excepted)."""
    null = tasks[-1].name
    hidden, labels, first, exact, first_ids = [], [], {}, {}, set()
    for i, task in enumerate(tqdm(tasks, desc=f"TD {label}", disable=not progress)):
        prompts = sample_prompts(task, k, n_prompts, seed=seed + 1000 * i, template=tmpl)
        f_all, e_all = [], []
        for start in range(0, len(prompts), batch_size):
            batch = tokenize_prompts(prompts[start : start + batch_size], model,
                                     padding_side="left", include_answer=True)  # fmt: skip
            kept: dict[str, torch.Tensor] = {}

            def keep(act, hook, kept=kept):
                kept["pred"] = act.argmax(-1).cpu()

            with torch.no_grad(), model.hooks(fwd_hooks=[("unembed.hook_out", keep)]):
                acts = activations_at_positions(model, batch, names_resid)
            hidden.append(torch.stack([acts[n] for n in names_resid]).cpu())
            for r, ans in enumerate(batch.answer_ids):
                q = int(batch.query_pos[r])
                got = kept["pred"][r, q : q + len(ans)]
                f_all.append(bool(got[0] == ans[0]))
                e_all.append(bool(torch.equal(got, torch.tensor(ans))))
                if task.name != null:
                    first_ids.add(ans[0])
        labels += [task.name] * len(prompts)
        first[task.name], exact[task.name] = float(np.mean(f_all)), float(np.mean(e_all))
    return torch.cat(hidden, dim=1), labels, first, exact, first_ids


# ---------------------------------------------------------------------------- 3. heads


def _top(values: torch.Tensor, n: int) -> list[tuple[int, int]]:
    n_heads = values.shape[1]
    order = torch.argsort(values.flatten(), descending=True)[:n]
    return [(int(i) // n_heads, int(i) % n_heads) for i in order]


@tidy_on_error
def head_comparison(
    model: TVModel | str,
    suite: TaskSuite | str,
    tasks: Sequence[str] | None,
    out: str | Path,
    config: HeadsConfig | None = None,
    *,
    device: str | None = None,
    **options: Any,
) -> HeadComparison:
    """Per task: every head patched at the last position from clean prompts into the same
    prompts with shuffled labels (exact and attribution), and the function-vector AIE of
    every head (mean clean head output into shuffled-label prompts); the overlap of their top
    ``top`` heads. Writes ``out/{task}/`` (patching) and ``out/heads.json``. Options:
    :class:`HeadsConfig` (``config=``, or its fields as keyword arguments). ``model`` may be
    a name or folder (loaded on ``device``), ``suite`` a name; ``tasks`` None: its first two."""

    cfg = (config or HeadsConfig()).with_overrides(**options)
    out = prepare_out_dir(out, PRETRAINED_HEADS)  # before the model is loaded
    model = as_model(model, device=device)
    suite = get_suite(suite) if isinstance(suite, str) else suite
    tasks = suite.names[:2] if tasks is None else tasks
    k, n_prompts, n_extract, top, seed = cfg.k, cfg.n_prompts, cfg.n_extract, cfg.top, cfg.seed
    template = cfg.template
    out = Path(out)
    result: dict[str, Any] = {
        "model": model.spec.to_dict(),
        "config": {
            "k": k,
            "n_prompts": n_prompts,
            "n_extract": n_extract,
            "top": top,
            "seed": seed,
            "prompt_bos": model.prompt_bos,
        },  # fmt: skip
        "tasks": {},
    }
    for task in tasks:
        run = run_patching(model, out / task, suite=suite, component="heads", method="both",
                           positions="last", tasks=[task], k=k, n_prompts=n_prompts,
                           seed=seed)  # fmt: skip
        _, table = function_vector(model, suite[task], k, n_extract, top, seed=seed + 7,
                                   template=template)  # fmt: skip
        save_figure(plot_head_aie(table.aie, f"{model.name}, {task}: function-vector AIE"),
                    out / task / "head_aie")  # fmt: skip
        ex, at = run.exact.values, run.attribution.values
        tops = {"exact": _top(ex, top), "attribution": _top(at, top), "aie": table.top(top)}

        def overlap(a: str, b: str, tops=tops) -> int:
            return len(set(tops[a]) & set(tops[b]))

        result["tasks"][task] = {
            "n_prompts": run.config["n_prompts"],
            "clean_metric": run.exact.clean_metric,
            "corrupted_metric": run.exact.corrupted_metric,
            "spearman_attribution_vs_exact": run.spearman,
            "top": {key: [list(x) for x in v] for key, v in tops.items()},
            f"overlap_top{top}": {
                "exact_vs_aie": overlap("exact", "aie"),
                "attribution_vs_aie": overlap("attribution", "aie"),
                "exact_vs_attribution": overlap("exact", "attribution"),
            },
        }
    heads = HeadComparison(result)
    heads.save(out / "heads.json")  # HeadComparison.load reads it back
    return heads


def load_results(path: str | Path) -> dict:
    """A JSON file this module wrote, its paths made this machine's again (they are written
    portable: :func:`tvlens.runs.portable.local`)."""
    path = Path(path)
    if not path.is_file():
        raise TVLensError(f"No results at {str(path)!r}.")
    return local(json.loads(path.read_text()))


@tidy_on_error
def layer_finetuning(
    model: str | Path,
    suite: TaskSuite | str,
    out: str | Path,
    config: LayerFinetuneConfig | None = None,
    *,
    tasks: Sequence[str] | None = None,
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> FinetuneTable:
    """Early- against late-layer fine-tuning (Han et al. 2025, Table 1) of a pretrained
    model: only its first or only its last ``k_layers`` blocks are tuned (LoRA or full) on
    ``train_fraction`` of each task's pairs, and loss, accuracy and TD (with the Null task)
    are measured before and after on prompts built from the other pairs only.
    Writes ``out/metrics.json``, ``out/table.md`` and the tuned models (``out/first``,
    ``out/last``); a stopped call resumes. Options: :class:`LayerFinetuneConfig`
    (``config=``, or its fields as keyword arguments); ``suite`` may be a name, ``tasks``
    the ones of it to keep."""

    cfg = (config or LayerFinetuneConfig()).with_overrides(**options)
    (suite,) = named_suites(suite, tasks).values()
    train_fraction, seed, k = cfg.train_fraction, cfg.seed, cfg.k
    parts = [t.split((train_fraction, 1 - train_fraction), seed=seed) for t in suite]
    split = {"train_fraction": train_fraction, "split_seed": seed}
    train = TaskSuite(
        suite.name, tuple(p[0] for p in parts), spec={**suite.spec, **split, "part": 0}
    )
    held = TaskSuite(
        suite.name, tuple(p[1] for p in parts), spec={**suite.spec, **split, "part": 1}
    )
    res = finetune_layers(
        model, TokenFamily(train, k=k), out, k_layers=cfg.k_layers, steps=cfg.steps, lr=cfg.lr,
        batch_size=cfg.batch_size, n_prompts=cfg.n_prompts, seed=seed, method=cfg.method,
        progress=progress, device=device, eval_family=TokenFamily(held, k=k),
    )  # fmt: skip
    (Path(out) / "table.md").write_text(res.table() + "\n")
    return FinetuneTable(res.to_dict())
