"""The comparison's outputs, from the cells on disk: per method the accuracy (mean ± std over
seeds, and a 95% bootstrap interval over test queries) in-domain and unseen, with the training
instructions and with the held-out one; per category; the learning curves; the three verdicts
on the paper's claims; the tables and figures.

Intervals resample the test queries within each task (every task has the same number), with
one set of resamples shared by all methods, so that a difference between two methods is a
paired difference over the same queries. A query's correctness is first averaged over seeds.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

import tvlens
from tvlens.compare import registry
from tvlens.compare.registry import TIME_REFERENCE, get_method_spec
from tvlens.compare.setup import SELECTED, Cell, CompareConfig, CompareData, cell_path
from tvlens.compare.setup import compare_cells as _cells
from tvlens.plotting import save_figure
from tvlens.plotting.atv import (
    plot_compare_bars,
    plot_compare_heatmap,
    plot_learning_curves,
    plot_overlap,
)
from tvlens.runs.portable import local

GROUPS = ("in_domain", "unseen")
# Two accuracies within this margin count as equal (the equal-rank claim).
EQUIVALENCE_MARGIN = 0.05


def load_cells(out: Path, cfg: CompareConfig) -> tuple[dict[str, list[dict]], list[dict]]:
    """The reported cells by method (one per seed), and the sweep cells."""
    reported: dict[str, list[dict]] = {}
    sweeps: list[dict] = []
    for cell in _cells(cfg):
        p = cell_path(out, cell)
        if p.is_file():
            c = local(json.loads(p.read_text()))  # cells are written portable
            if cell.is_sweep:
                sweeps.append(c)
            else:
                reported.setdefault(cell.method, []).append(c)
    return reported, sweeps


def _mean_std(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def resamples(data: CompareData, group: str, n: int, seed: int) -> np.ndarray:
    """``[n, queries]`` indices of the group's test queries, resampled within each task."""
    tasks = np.array([p.task for p in data.groups()[group].test])
    rng = np.random.default_rng([seed, GROUPS.index(group)])
    cols = [rng.choice(np.flatnonzero(tasks == t), size=(n, int((tasks == t).sum())))
            for t in dict.fromkeys(tasks.tolist())]  # fmt: skip
    return np.concatenate(cols, axis=1)


def ci(values: np.ndarray, idx: np.ndarray) -> list[float]:
    """The 95% percentile interval of the mean of ``values`` over the resamples ``idx``."""
    means = values[idx].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def per_query(done: list[dict], group: str, tpl: str) -> np.ndarray | None:
    """First-token correctness per test query, averaged over the seeds."""
    rows = [r["groups"][group][tpl]["first"] for r in done if tpl in r["groups"][group]]
    return np.mean(np.asarray(rows, dtype=float), axis=0) if rows else None


def summarize(
    cells: dict[str, list[dict]], sweeps: list[dict], cfg: CompareConfig, data: CompareData
) -> tuple[dict[str, Any], dict[tuple[str, str, str], np.ndarray]]:
    """Per method its row (see the module docstring); and per (method, group, instructions)
    the per-query correctness the verdicts compare."""
    idx = {g: resamples(data, g, cfg.bootstrap, cfg.data_seed) for g in GROUPS}
    zs = next((r for r in cells.get(TIME_REFERENCE, []) if "skipped" not in r), None)
    ref = {}
    if zs is not None:
        ref = {"bridge": zs["infer_seconds_per_query"],
               "hf": zs["info"].get("hf_infer_seconds_per_query")}  # fmt: skip
    out: dict[str, Any] = {}
    queries: dict[tuple[str, str, str], np.ndarray] = {}
    for method, runs in cells.items():
        spec = get_method_spec(method)
        done = [r for r in runs if "skipped" not in r]
        if not done:
            out[method] = {"skipped": runs[0]["skipped"]}
            continue
        row: dict[str, Any] = {"seeds": [r["seed"] for r in done], "path": done[0]["path"],
                               "trained": spec.trained, "oracle_label": spec.oracle_label,
                               "demonstrations": spec.demonstrations,
                               "instructed": spec.instructed,
                               "description": spec.description}  # fmt: skip
        for g in GROUPS:
            for tpl in ("train", "heldout"):
                if tpl not in done[0]["groups"][g]:
                    continue
                key = f"{g}" if tpl == "train" else f"{g}_heldout"
                for metric in ("first_token", "exact_match"):
                    m, s = _mean_std([r["groups"][g][tpl][metric] for r in done])
                    row[f"{key}_{metric}_mean"], row[f"{key}_{metric}_std"] = m, s
                q = per_query(done, g, tpl)
                queries[(method, g, tpl)] = q
                row[f"{key}_ci"] = ci(q, idx[g])
            tasks = done[0]["groups"][g]["train"]["tasks"]
            row[f"{g}_tasks"] = {
                t: float(np.mean([r["groups"][g]["train"]["tasks"][t]["first_token"]
                                  for r in done]))
                for t in tasks
            }  # fmt: skip
        cats: dict[str, list[float]] = {}
        for g in GROUPS:
            for t, acc in row[f"{g}_tasks"].items():
                cats.setdefault(f"{g}:{data.categories[t]}", []).append(acc)
        row["categories"] = {c: float(np.mean(v)) for c, v in cats.items()}
        row["trainable_params"] = done[0]["trainable_params"]
        row["train_seconds"] = float(np.mean([r["train_seconds"] for r in done]))
        infer = float(np.mean([r["infer_seconds_per_query"] for r in done]))
        base = ref.get(done[0]["path"])
        row["infer_seconds_per_query"] = infer
        row["infer_relative_to_zero_shot"] = infer / base if base else None
        row["prompt_tokens_per_query"] = float(np.mean([r["prompt_tokens_per_query"]
                                                        for r in done]))  # fmt: skip
        row["virtual_tokens"] = done[0].get("virtual_tokens", 0)
        info = [r.get("info", {}) for r in done]
        if spec.trained:
            losses = [i["final_train_loss"] for i in info if i.get("final_train_loss") is not None]
            row["final_train_loss"] = float(np.mean(losses)) if losses else None
            row["epochs"] = [[i.get("best_epoch"), i.get("epochs_run")] for i in info]
            row["still_rising"] = any(i.get("still_rising") for i in info)
            row["selected"] = info[0].get("selection", {})
            row["curve"] = info[0].get("curve", [])
            row["steer_ratio"] = info[0].get("extra", {}).get("steer_ratio")
        if "dev_retrieval_accuracy" in info[0]:
            row["dev_retrieval_accuracy"] = info[0]["dev_retrieval_accuracy"]
            hits = [v.get(t, 0.0) for t, v in info[0].get("retrieved", {}).get(
                "in_domain", {}).items()]  # fmt: skip
            row["test_retrieval_accuracy"] = float(np.mean(hits)) if hits else None
            row["retrieved"] = info[0].get("retrieved")
        row["info"] = info[0]
        out[method] = row
    out_sweeps = {}
    for c in sweeps:
        i = c.get("info", {})
        out_sweeps.setdefault(c["method"], {})[c["variant"]] = {
            "best_dev_acc": i.get("best_dev_acc"), "curve": i.get("curve", []),
            "final_train_loss": i.get("final_train_loss"), "still_rising": i.get("still_rising"),
            "steer_ratio": i.get("extra", {}).get("steer_ratio"),
        }  # fmt: skip
    if out_sweeps:
        out["_sweeps"] = out_sweeps
    return out, queries


# ---------------------------------------------------------------------------- verdicts


def paired(
    queries: dict, a: str, b: str, group: str, idx: np.ndarray, tpl: str = "train"
) -> dict[str, Any] | None:
    """``a`` minus ``b`` on the same test queries: the difference and its 95% interval."""
    qa, qb = queries.get((a, group, tpl)), queries.get((b, group, tpl))
    if qa is None or qb is None:
        return None
    d = qa - qb
    lo, hi = ci(d, idx)
    return {"a": a, "b": b, "group": group, "diff": round(float(d.mean()), 4), "ci": [lo, hi],
            "outcome": "better" if lo > 0 else "worse" if hi < 0 else "tie"}  # fmt: skip


def _claim(name: str, tests: list[dict | None], rule: str) -> dict[str, Any]:
    tests = [t for t in tests if t is not None]
    if not tests:
        return {"claim": name, "verdict": "inconclusive", "why": "methods missing", "tests": []}
    outs = [t["outcome"] for t in tests]
    if rule == "beats":
        verdict = ("reproduced" if all(o == "better" for o in outs)
                   else "not reproduced" if any(o == "worse" for o in outs)
                   else "inconclusive")  # fmt: skip
    else:  # "equal": within the margin, or better
        ok = [t["ci"][0] > -EQUIVALENCE_MARGIN for t in tests]
        bad = [t["ci"][1] < -EQUIVALENCE_MARGIN for t in tests]
        verdict = ("reproduced" if all(ok) else "not reproduced" if any(bad)
                   else "inconclusive")  # fmt: skip
    return {"claim": name, "verdict": verdict, "tests": tests}


def verdicts(queries: dict, data: CompareData, cfg: CompareConfig) -> list[dict[str, Any]]:
    """The paper's three claims, each "reproduced", "not reproduced" or "inconclusive" from
    paired 95% intervals: (1) ATV beats ICL and the fixed vectors in-domain; (2) ATV beats
    zero-shot, ICL, retrieval and LoRA on unseen tasks; (3) at equal rank ATV is no worse
    than LoRA (within ±0.05), and ATV beats prefix tuning."""
    idx = {g: resamples(data, g, cfg.bootstrap, cfg.data_seed) for g in GROUPS}
    claims = {
        c.name: _claim(c.name, [paired(queries, a, b, g, idx[g]) for a, b, g in c.tests], c.rule)
        for c in registry.CLAIMS
    }
    for c in registry.CLAIMS:  # a claim reported inside another: its test joins, verdicts combine
        if c.part_of is None:
            continue
        part, whole = claims.pop(c.name), claims[c.part_of]
        if part["tests"]:
            whole["tests"].append(part["tests"][0])
            both = (whole["verdict"], part["verdict"])
            whole["verdict"] = ("not reproduced" if "not reproduced" in both
                                else "reproduced" if both == ("reproduced",) * 2
                                else "inconclusive")  # fmt: skip
        whole["claim"] = f"{c.part_of}; {c.name}"
    return list(claims.values())


def format_verdicts(vs: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> str:
    """Markdown: each claim's verdict and the paired differences behind it; then the trained
    methods whose dev accuracy was still rising when their epochs ran out (their numbers are
    lower bounds) and the seeds each method has."""
    lines = []
    for v in vs:
        why = f" ({v['why']})" if v.get("why") else ""
        lines.append(f"- **{v['claim']}**: {v['verdict']}{why}")
        for t in v["tests"]:
            lines.append(f"  - {t['a']} − {t['b']} ({t['group']}): {t['diff']:+.3f} "
                         f"[{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}] → {t['outcome']}")  # fmt: skip
    rows = {
        m: r for m, r in (summary or {}).items() if not m.startswith("_") and "skipped" not in r
    }
    rising = [m for m, r in rows.items() if r.get("still_rising")]
    if rising:
        lines.append(f"\nStill rising when the epochs ran out (lower bounds): {', '.join(rising)}.")
    seeds = {m: len(r["seeds"]) for m, r in rows.items()}
    if seeds:
        lines.append("Seeds per method: " + ", ".join(f"{m} {n}" for m, n in seeds.items()) + ".")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- tables


def _acc(r: dict, key: str) -> str:
    if f"{key}_first_token_mean" not in r:
        return "-"
    lo, hi = r[f"{key}_ci"]
    return (f"{r[f'{key}_first_token_mean']:.3f} ± {r[f'{key}_first_token_std']:.3f} "
            f"[{lo:.2f}, {hi:.2f}]")  # fmt: skip


def _flags(r: dict) -> str:
    f = []
    if r["oracle_label"]:
        f.append("oracle label")
    if r["demonstrations"]:
        f.append("demos")
    if r["trained"]:
        f.append("trained")
    if not r["instructed"]:
        f.append("no instruction")
    return ", ".join(f) or "-"


def format_table(summary: dict[str, Any]) -> str:
    """Markdown: accuracy mean ± std over seeds [95% interval over queries], per group and
    instruction set, with what each method sees and how its training ended."""
    head = ["method", "sees", "in-domain", "in-domain, held-out instr.", "unseen",
            "unseen, held-out instr.", "params", "final train loss", "epochs best/run",
            "chosen", "infer × zero-shot"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, r in summary.items():
        if m.startswith("_"):
            continue
        if "skipped" in r:
            lines.append(
                f"| {m} | skipped: {r['skipped'].split(':')[0]} |" + " |" * (len(head) - 2)
            )
            continue
        rel = r["infer_relative_to_zero_shot"]
        loss = r.get("final_train_loss")
        ep = "; ".join(f"{b}/{n}" for b, n in r.get("epochs", []))
        if r.get("still_rising"):
            ep += " (still rising)"
        lines.append("| " + " | ".join([
            m, _flags(r), _acc(r, "in_domain"), _acc(r, "in_domain_heldout"), _acc(r, "unseen"),
            _acc(r, "unseen_heldout"), f"{r['trainable_params']:,}",
            "-" if loss is None else f"{loss:.3f}", ep or "-",
            r.get("selected", {}).get("label", "-") if r["trained"] else "-",
            "-" if rel is None else f"{rel:.2f}",
        ]) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def format_categories(summary: dict[str, Any]) -> str:
    """Markdown: mean first-token accuracy per task category (in-domain, then unseen)."""
    rows = {m: r for m, r in summary.items() if not m.startswith("_") and "skipped" not in r}
    if not rows:
        return ""
    cats = list(dict.fromkeys(c for r in rows.values() for c in r["categories"]))
    lines = ["| method | " + " | ".join(c.replace("in_domain:", "").replace("unseen:", "unseen ")
                                          for c in cats) + " |",
             "|" + "---|" * (len(cats) + 1)]  # fmt: skip
    for m, r in rows.items():
        lines.append(f"| {m} | " + " | ".join(f"{r['categories'].get(c, float('nan')):.2f}"
                                               for c in cats) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def format_curves(summary: dict[str, Any]) -> str:
    """Markdown: each trained method's dev accuracy after every epoch (its selected variant,
    seed 0), how its training ended, and every swept variant's best dev accuracy."""
    sweeps = summary.get("_sweeps", {})
    cols = ["method", "chosen", "dev accuracy by epoch", "ended", "final train loss",
            "sweep (best dev)"]  # fmt: skip
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for m, r in summary.items():
        if m.startswith("_") or "skipped" in r or not r.get("curve"):
            continue
        curve = " → ".join(f"{e['dev_acc']:.2f}" for e in r["curve"])
        info = r.get("info", {})
        ended = ("still rising" if info.get("still_rising")
                 else "stopped: no better dev for the patience" if info.get("stopped_early")
                 else "epoch budget, dev flat")  # fmt: skip
        loss = r.get("final_train_loss")
        swept = ", ".join(f"{k} {v['best_dev_acc']:.2f}" for k, v in sweeps.get(m, {}).items())
        lines.append(f"| {m} | {r.get('selected', {}).get('label', '-')} | {curve} | {ended} | "
                     f"{'-' if loss is None else f'{loss:.3f}'} | {swept or '-'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def format_overlap(data: CompareData) -> tuple[str, str]:
    """The input-overlap matrix (share of each task's inputs that are inputs of each
    in-domain task) as CSV and as markdown (unseen tasks' rows)."""
    ind = data.in_domain.tasks
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", "group", *ind])
    for g, s in data.groups().items():
        for t in s.tasks:
            w.writerow([t, g, *[data.overlap[t].get(d, "") for d in ind]])
    md = ["| unseen task | max overlap | with |", "|---|---|---|"]
    for t in data.unseen.tasks:
        d, v = max(data.overlap[t].items(), key=lambda x: x[1])
        md.append(f"| {t} | {v:.0%} | {d} |")
    return buf.getvalue(), "\n".join(md) + "\n"


def _csv(summary: dict[str, Any], data: CompareData) -> str:
    rows = []
    for m, r in summary.items():
        if m.startswith("_"):
            continue
        if "skipped" in r:
            rows.append({"method": m, "skipped": r["skipped"]})
            continue
        row: dict[str, Any] = {"method": m, "oracle_label": r["oracle_label"],
                               "demonstrations": r["demonstrations"], "trained": r["trained"],
                               "instructed": r["instructed"]}  # fmt: skip
        for key in ("in_domain", "in_domain_heldout", "unseen", "unseen_heldout"):
            for metric in ("first_token", "exact_match"):
                for s in ("mean", "std"):
                    k = f"{key}_{metric}_{s}"
                    row[k] = round(r[k], 4) if k in r else None
            row[f"{key}_ci_lo"], row[f"{key}_ci_hi"] = r.get(f"{key}_ci", [None, None])
        rel = r["infer_relative_to_zero_shot"]
        row.update(
            seeds=len(r["seeds"]), trainable_params=r["trainable_params"],
            final_train_loss=r.get("final_train_loss"), still_rising=r.get("still_rising"),
            selected=r.get("selected", {}).get("label"),
            train_seconds=round(r["train_seconds"], 2),
            infer_ms_per_query=round(1000 * r["infer_seconds_per_query"], 3),
            infer_relative_to_zero_shot=None if rel is None else round(rel, 3),
            prompt_tokens_per_query=round(r["prompt_tokens_per_query"], 1),
            virtual_tokens=r["virtual_tokens"], path=r["path"],
        )  # fmt: skip
        for g in GROUPS:
            for t, v in r[f"{g}_tasks"].items():
                row[f"{g}:{t}"] = round(v, 4)
        rows.append(row)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_outputs(
    out: Path, cfg: CompareConfig, data: CompareData, device: str
) -> tuple[dict, str, dict]:
    """Every output from the cells present (a partial compare writes a partial table, and
    says which cells are missing); ``device`` in words, as the cells were computed. Returns
    the summary, the table and the document of ``comparison.json``, which the caller writes
    with its result (:class:`~tvlens.compare.run.CompareResult`, which loads it back)."""

    cells, sweeps = load_cells(out, cfg)
    summary, queries = summarize(cells, sweeps, cfg, data)
    vs = verdicts(queries, data, cfg)
    table = format_table(summary)
    overlap_csv, overlap_md = format_overlap(data)
    _write_text(out / "comparison.csv", _csv(summary, data))
    _write_text(out / "table.md", table)
    _write_text(out / "categories.md", format_categories(summary))
    _write_text(out / "verdicts.md", format_verdicts(vs, summary))
    _write_text(out / "curves.md", format_curves(summary))
    _write_text(out / "overlap.csv", overlap_csv)
    _write_text(out / "overlap.md", overlap_md)
    missing = [str(c) for c in _cells(cfg) if not cell_path(out, c).is_file()]
    doc = (
        {"tvlens": tvlens.__version__, "target": cfg.target, "device": device,
         "split": data.describe(), "scale": cfg.scale_note, "config": cfg.to_dict(),
         "complete": not missing, "missing_cells": missing,
         "metric": "first answer token over the whole vocabulary (argmax), and greedy exact "
                   "match; means over tasks, then mean ± std over seeds; 95% bootstrap "
                   "intervals over test queries (resampled within tasks, seeds averaged)",
         "verdicts": vs, "methods": summary}
    )  # fmt: skip
    rows = {m: r for m, r in summary.items() if not m.startswith("_") and "skipped" not in r}
    if rows:
        save_figure(plot_compare_bars(rows), out / "bars")
        save_figure(plot_compare_heatmap(rows, data), out / "heatmap", height=600)
        if any(r.get("curve") for r in rows.values()):
            save_figure(plot_learning_curves(rows, summary.get("_sweeps", {})), out / "curves")
    save_figure(plot_overlap(data), out / "overlap", height=500)
    return summary, table, doc


__all__ = ["Cell", "SELECTED", "format_table", "summarize", "verdicts", "write_outputs"]
