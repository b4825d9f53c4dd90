"""The comparison's outputs, from the cells on disk: per method the accuracy (whole-answer
exact match, mean ± std over seeds, and a 95% interval; first token beside it) in-domain and
unseen, with the training instructions and with the held-out one; per category; the learning
curves; the three verdicts on the paper's claims; the tables and figures.

Intervals and verdicts come from :mod:`tvlens.evaluation.stats`: a hierarchical bootstrap
that resamples tasks, then queries within each drawn task, then seeds (DESIGN.md §8: tasks
dominate the variance, and resampling queries with tasks fixed gave intervals 2-3x too
narrow); a difference between two methods is paired on the same task, query and seed draw;
"equal" only by TOST within the declared margin; the minimal detectable difference beside
each verdict.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import tvlens
from tvlens.compare import registry
from tvlens.compare.registry import TIME_REFERENCE, get_method_spec
from tvlens.compare.sentences import INSTRUCTIONS, verdict_sentences, verdict_table
from tvlens.compare.setup import (
    SELECTED,
    Cell,
    CompareConfig,
    CompareData,
    cell_path,
    cell_state,
    grid_gaps,
    read_cell,
    sweep_variants,
)
from tvlens.compare.setup import compare_cells as _cells
from tvlens.errors import TVLensError
from tvlens.evaluation import stats
from tvlens.evaluation.scoring import first_token_flags
from tvlens.plotting import save_figure
from tvlens.plotting.atv import (
    plot_compare_bars,
    plot_compare_heatmap,
    plot_learning_curves,
    plot_overlap,
)
from tvlens.runs.portable import local

GROUPS = ("in_domain", "unseen")


def load_cells(out: Path, cfg: CompareConfig) -> tuple[dict[str, list[dict]], list[dict]]:
    """The reported cells by method (one per seed), and the sweep cells."""
    reported: dict[str, list[dict]] = {}
    sweeps: list[dict] = []
    for cell in _cells(cfg, out):
        p = cell_path(out, cell)
        if cell_state(cfg, out, cell) == "done":  # a stale cell waits to be computed again
            c = local(read_cell(p))  # cells are written portable
            if cell.is_sweep:
                sweeps.append(c)
            else:
                reported.setdefault(cell.method, []).append(c)
    return reported, sweeps


def _mean_std(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def method_ci(records: pd.DataFrame, method: str, group: str, tpl: str, cfg: CompareConfig
              ) -> list[float]:  # fmt: skip
    """The 95% interval of ``method``'s whole-answer exact match on ``group``'s test queries
    in the instruction set ``tpl``: the hierarchical bootstrap (tasks > queries > seeds) that
    the verdicts use, at least :data:`MIN_RESAMPLES` times."""
    sub = records[(records["group"] == group) & (records["instructions"] == tpl)]
    res = stats.hierarchical_bootstrap(
        sub.rename(columns={VERDICT_METRIC: "value"}), method,
        n_resamples=max(int(cfg.bootstrap), MIN_RESAMPLES), seed=int(cfg.data_seed),
    )  # fmt: skip
    return [round(x, 4) for x in res.interval(0.95)]


def grid_position(variants: list[dict], chosen: dict) -> dict[str, dict[str, Any]]:
    """Per swept setting of the chosen variant: its value, the grid through the chosen point
    (the variants equal to it on every other setting) and where the value lies on it:
    ``interior``, ``top`` or ``bottom`` of the grid (a selection at an edge says the optimum
    may lie beyond it), or ``not swept`` (one value on that line)."""
    out = {}
    for k in dict.fromkeys(k for v in variants for k in v):
        if k not in chosen:
            continue
        line = sorted({v[k] for v in variants if k in v and all(
            v.get(o) == chosen.get(o) for o in chosen if o != k)})  # fmt: skip
        c = chosen[k]
        pos = ("not swept" if len(line) < 2 else "bottom" if c <= line[0]
               else "top" if c >= line[-1] else "interior")  # fmt: skip
        out[k] = {"chosen": c, "grid": line, "position": pos}
    return out


def summarize(
    cells: dict[str, list[dict]], sweeps: list[dict], cfg: CompareConfig, data: CompareData
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Per method its row (see the module docstring); and the per-query records the
    verdicts compare (:func:`query_records`)."""
    records = query_records(cells, data)
    zs = next((r for r in cells.get(TIME_REFERENCE, []) if "skipped" not in r), None)
    ref = {}
    if zs is not None:
        ref = {"bridge": zs["infer_seconds_per_query"],
               "hf": zs["info"].get("hf_infer_seconds_per_query")}  # fmt: skip
    out: dict[str, Any] = {}
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
                row[f"{key}_ci"] = method_ci(records, method, g, tpl, cfg)
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
            # Convergence, per cell: stopped by patience (else the epochs ran out), the
            # training loss at the chosen epoch, where the chosen settings lie on their grid.
            row["stopped_by_patience"] = [bool(i.get("stopped_early")) for i in info]
            bl = [i["best_epoch_train_loss"] for i in info
                  if i.get("best_epoch_train_loss") is not None]  # fmt: skip
            row["best_epoch_train_loss"] = float(np.mean(bl)) if bl else None
            tried = ([c["variant_values"] for c in sweeps if c.get("method") == method]
                     or sweep_variants(cfg, method))  # fmt: skip
            row["grid"] = grid_position(tried, done[0].get("variant_values") or {})
            if sum(len({v[k] for v in tried}) > 1 for k in tried[0]) > 1:  # lr and λ swept
                row["grid_pairs"] = {"tried": len(tried), "of": len(tried) + len(grid_gaps(tried))}
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
    return out, records


# ---------------------------------------------------------------------------- verdicts

# The verdicts' metric: greedy whole-answer exact match per query ("exact" in a cell); first
# token ("first") is a secondary column (it gives free credit to multi-token answers whose
# first token is a bare space or shared with a sibling task: DESIGN.md §8).
VERDICT_METRIC = "exact"
SECONDARY_METRIC = "first"
# A reviewer's floor for a percentile interval's stability (stats.hierarchical_bootstrap).
MIN_RESAMPLES = 10_000


def query_records(cells: dict[str, list[dict]], data: CompareData) -> pd.DataFrame:
    """One row per (group, instructions, task, query, seed, method) with both per-query
    scores (``exact``, ``first``): the records :mod:`tvlens.evaluation.stats` resamples. A
    method with one run has no seed level (``seed`` None); with several, each run's seed."""
    rows = []
    for method, runs in cells.items():
        done = [r for r in runs if "skipped" not in r]
        for r in done:
            seed = r["seed"] if len(done) > 1 else None
            for g in GROUPS:
                test = data.groups()[g].test
                for tpl, res in r["groups"][g].items():
                    if VERDICT_METRIC not in res:
                        continue
                    if len(res[VERDICT_METRIC]) != len(test):
                        raise TVLensError(
                            f"Cell {method!r} seed {r['seed']} scores {len(res[VERDICT_METRIC])} "
                            f"{g} test queries, the data has {len(test)}: the cell belongs to "
                            "another configuration; recompute it."
                        )
                    for i, (p, e, f) in enumerate(
                        zip(test, res[VERDICT_METRIC], res[SECONDARY_METRIC], strict=True)
                    ):
                        rows.append({"group": g, "instructions": tpl, "task": p.task, "query": i,
                                     "seed": seed, "method": method, "exact": float(e),
                                     "first": float(f)})  # fmt: skip
    cols = ["group", "instructions", "task", "query", "seed", "method", "exact", "first"]
    return pd.DataFrame(rows, columns=cols)


def claim_word(tests: list[dict[str, Any]], not_run: int = 0) -> str:
    """A claim's verdict from its tests' words (each from :func:`stats.verdict`): a ``beats``
    claim is reproduced when every test is ``better``, not reproduced when any is ``worse``
    or ``equal`` (shown within the margin, so not better); an ``equal`` claim (no worse than,
    within the margin) is reproduced when every test is ``equal`` or ``better``, not
    reproduced when any is ``worse``; otherwise inconclusive. ``not_run``: the claim's tests
    whose methods the run lacks; one failed test still refutes the claim, but a claim is
    never reproduced on part of its tests."""
    if not tests:
        return "inconclusive"
    words = [(t["word"], t["rule"]) for t in tests]
    ok = [w == "better" or (r == "equal" and w == "equal") for w, r in words]
    bad = [w == "worse" or (r == "beats" and w == "equal") for w, r in words]
    if any(bad):
        return "not reproduced"
    return "reproduced" if all(ok) and not not_run else "inconclusive"


def _test(
    recs: pd.DataFrame, a: str, b: str, group: str, tpl: str, rule: str, margin: float,
    n_resamples: int, levels: tuple[str, ...], seed: int, flagged: dict[str, int] | None,
) -> dict[str, Any] | None:  # fmt: skip
    sub = recs[(recs["group"] == group) & (recs["instructions"] == tpl)]
    if not {a, b} <= set(sub["method"]):
        return None
    opts = {"levels": levels, "n_resamples": n_resamples, "seed": seed}
    main = stats.hierarchical_bootstrap(sub.rename(columns={VERDICT_METRIC: "value"}), a, b,
                                        **opts)  # fmt: skip
    v = stats.verdict(main, margin)
    sec = stats.hierarchical_bootstrap(sub.rename(columns={SECONDARY_METRIC: "value"}), a, b,
                                       **opts)  # fmt: skip
    out = {**v.to_dict(), "group": group, "instructions": tpl, "rule": rule,
           "metric": "exact match",
           "first_token": {"estimate": sec.estimate, "ci": list(sec.interval(0.95)),
                           "word": stats.verdict(sec, margin).word}}  # fmt: skip
    if flagged is not None:
        out["first_token"]["flagged_queries"] = flagged.get(group, 0)
    return out


def verdicts(
    records: pd.DataFrame, cfg: CompareConfig, flagged: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """The paper's three claims, each "reproduced", "not reproduced" or "inconclusive"
    (:func:`claim_word`) from paired tests on whole-answer exact match, with the training
    instructions and with the held-out one. Each test's word comes from
    :func:`tvlens.evaluation.stats.verdict`: a hierarchical bootstrap (tasks > queries >
    seeds, at least 10,000 resamples), ``better`` / ``worse`` from the 95% interval, ``equal``
    by TOST (90% interval inside ± the declared margin), else ``inconclusive``; the minimal
    detectable difference beside it. Claims: (1) ATV beats ICL and the fixed vectors
    in-domain; (2) ATV beats zero-shot, ICL, retrieval and LoRA on unseen tasks; (3) at equal
    rank ATV matches LoRA (TOST), and ATV beats prefix tuning. ``flagged``: per group, the
    test queries whose first answer token is free or shared (first-token column's caveat)."""
    margin, n = cfg.equivalence_margin, max(cfg.bootstrap, MIN_RESAMPLES)
    levels, seed = tuple(cfg.bootstrap_levels), cfg.data_seed
    claims: dict[str, dict[str, Any]] = {}
    tpls = [tpl for tpl in INSTRUCTIONS if (records["instructions"] == tpl).any()]
    for c in registry.CLAIMS:
        tests = [t for tpl in tpls for a, b, g in c.tests
                 if (t := _test(records, a, b, g, tpl, c.rule, margin, n, levels, seed,
                                flagged)) is not None]  # fmt: skip
        name = c.part_of or c.name
        if name not in claims:
            claims[name] = {"claim": name, "tests": [], "declared": []}
        if c.part_of is not None:
            claims[name]["claim"] = f"{claims[name]['claim']}; {c.name}"
        claims[name]["tests"].extend(tests)
        claims[name]["declared"].extend((a, b, g) for a, b, g in c.tests)
    for v in claims.values():
        declared = v.pop("declared")
        # The claim's tests the run could not make (a method without records).
        done = {(t["method"], t["baseline"], t["group"], t["instructions"]) for t in v["tests"]}
        missing = {tpl: [f"{a} − {b} ({g})" for a, b, g in declared
                         if (a, b, g, tpl) not in done] for tpl in tpls}  # fmt: skip
        v["not_run"] = sorted({x for xs in missing.values() for x in xs},
                              key=[f"{a} − {b} ({g})" for a, b, g in declared].index)  # fmt: skip
        v["verdict"] = claim_word(v["tests"], len(v["not_run"]))
        v["by_instructions"] = {
            tpl: claim_word([t for t in v["tests"] if t["instructions"] == tpl], len(missing[tpl]))
            for tpl in tpls
            if any(t["instructions"] == tpl for t in v["tests"])
        }
        if not v["tests"]:
            v["why"] = "methods missing"
        elif v["not_run"]:
            v["why"] = f"{len(v['not_run'])} of its {len(declared)} tests not run"
        v["margin"], v["n_resamples"], v["levels"] = margin, n, list(levels)
    return list(claims.values())


def format_verdicts(
    vs: list[dict[str, Any]], summary: dict[str, Any] | None = None,
    methods: list[str] | None = None,
) -> str:  # fmt: skip
    """Markdown: the claims' sentences (:func:`verdict_sentences`), the table of tests
    (:func:`verdict_table`); then the trained methods whose dev accuracy was still rising
    when their epochs ran out (their numbers are lower bounds), the seeds each method has,
    and the configured ``methods`` without any result yet."""
    lines = [verdict_sentences(vs), verdict_table(vs)]
    rows = {
        m: r for m, r in (summary or {}).items() if not m.startswith("_") and "skipped" not in r
    }
    rising = [m for m, r in rows.items() if r.get("still_rising")]
    if rising:
        lines.append(f"Still rising when the epochs ran out (lower bounds): {', '.join(rising)}.")
    seeds = {m: len(r["seeds"]) for m, r in rows.items()}
    if seeds:
        lines.append("Seeds per method: " + ", ".join(f"{m} {n}" for m, n in seeds.items()) + ".")
    if none := [m for m in methods or () if m not in rows]:
        lines.append(f"No result yet (`missing_cells` in `comparison.json`): {', '.join(none)}.")
    return "\n".join(lines) + "\n"


def first_token_flagged(data: CompareData, tokenizer: Any) -> dict[str, int]:
    """Per group, the test queries whose answer's first token is whitespace only or the first
    token of another task's answer (:func:`tvlens.evaluation.scoring.first_token_flags`)."""
    groups = data.groups()
    by_task: dict[str, list[str]] = {}  # every group's answers: siblings sit across groups
    for s in groups.values():
        for p in s.test:
            by_task.setdefault(p.task, []).append(p.answer)
    first = next((s.test[0] for s in groups.values() if s.test), None)
    prefix = first.template.answer_prefix if first is not None else " "
    flags = first_token_flags(by_task, tokenizer, prefix)
    group_of = {t: g for g, s in groups.items() for t in s.tasks}
    out = dict.fromkeys(groups, 0)
    for f in flags:
        out[group_of[f.task]] += int(f.flagged)
    return out


# ---------------------------------------------------------------------------- tables


def _acc(r: dict, key: str) -> str:
    """Exact match mean ± std over seeds [95% hierarchical interval] (first token)."""
    if f"{key}_exact_match_mean" not in r:
        return "-"
    lo, hi = r[f"{key}_ci"]
    return (f"{r[f'{key}_exact_match_mean']:.3f} ± {r[f'{key}_exact_match_std']:.3f} "
            f"[{lo:.2f}, {hi:.2f}] ({r[f'{key}_first_token_mean']:.2f})")  # fmt: skip


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
    """Markdown: whole-answer exact match, mean ± std over seeds [95% interval, tasks >
    queries > seeds resampled] (first-token accuracy), per group and instruction set, with
    what each method sees and how its training ended."""
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
    seed 0), how its training ended, where its chosen settings lie on their grid
    (:func:`grid_position`), how many seeds' runs stopped by patience (generated per cell, not
    asserted), the training loss at the chosen epoch, and every swept variant's best dev
    accuracy."""
    sweeps = summary.get("_sweeps", {})
    cols = ["method", "chosen", "on its grid", "dev accuracy by epoch", "ended",
            "stopped by patience", "train loss at chosen epoch", "final train loss",
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
        grid = "; ".join(
            f"{k} {g['position']} of {g['grid']}" for k, g in r.get("grid", {}).items()
        )
        stop = r.get("stopped_by_patience", [])
        bl = r.get("best_epoch_train_loss")
        lines.append(f"| {m} | {r.get('selected', {}).get('label', '-')} | {grid or '-'} | "
                     f"{curve} | {ended} | {sum(stop)} of {len(stop)} seeds | "
                     f"{'-' if bl is None else f'{bl:.3f}'} | "
                     f"{'-' if loss is None else f'{loss:.3f}'} | {swept or '-'} |")  # fmt: skip
    return "\n".join(lines) + "\n" + grid_summary(summary)


def grid_summary(summary: dict[str, Any], key: str = "lr") -> str:
    """One generated line under the curves: how many swept methods chose a learning rate
    (``key``) interior to its grid, and which sit on an edge (their optimum may lie beyond:
    widen with ``sweep_widen``)."""
    grids = {m: r.get("grid", {}).get(key, {}) for m, r in summary.items()
             if not m.startswith("_") and "skipped" not in r}  # fmt: skip
    pos = {m: g["position"] for m, g in grids.items()
           if g.get("position") not in (None, "not swept")}  # fmt: skip
    if not pos:
        return ""
    edge = [f"{m} ({p})" for m, p in pos.items() if p != "interior"]
    n_in = len(pos) - len(edge)
    line = f"\nChosen {key} interior to its grid: {n_in} of {len(pos)} swept methods"
    line += f"; on an edge: {', '.join(edge)}.\n" if edge else ".\n"
    pairs = {m: r["grid_pairs"] for m, r in summary.items()
             if not m.startswith("_") and "grid_pairs" in r}  # fmt: skip
    if pairs:  # a cross tries λ at one learning rate: the joint optimum may lie off it
        shape = [f"{m} {'every pair' if p['tried'] >= p['of'] else 'a cross'} "
                 f"({p['tried']} of the {p['of']} pairs)" for m, p in pairs.items()]  # fmt: skip
        line += f"\nLearning rate and λ swept: {'; '.join(shape)}.\n"
    return line


def format_overlap(data: CompareData) -> tuple[str, str]:
    """The input-overlap matrix (share of each task's inputs that are inputs of each
    in-domain task) as CSV (exact strings; then ``lower:`` after lowercasing and ``words:``
    word by word, see :func:`tvlens.compare.data.input_overlap`) and as markdown: per task,
    unseen and in-domain, its largest overlap with another in-domain task under each mode."""
    ind = data.in_domain.tasks
    modes = data.overlap_modes or {"exact": data.overlap}
    extra = [m for m in modes if m != "exact"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", "group", *ind, *[f"{m}:{d}" for m in extra for d in ind]])
    for g, s in data.groups().items():
        for t in s.tasks:
            w.writerow([t, g, *[data.overlap[t].get(d, "") for d in ind],
                        *[modes[m][t].get(d, "") for m in extra for d in ind]])  # fmt: skip
    head = " | ".join(f"max overlap, {m} | with" for m in modes)
    md = [f"| task | group | {head} |", "|---|---|" + "---|---|" * len(modes)]
    for g, s in data.groups().items():
        for t in s.tasks:
            cells = []
            for m in modes:
                if modes[m].get(t):
                    d, v = max(modes[m][t].items(), key=lambda x: x[1])
                    cells += [f"{v:.0%}", d]
                else:
                    cells += ["-", "-"]
            md.append(f"| {t} | {g} | " + " | ".join(cells) + " |")
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


UNRECORDED_DEVICE = "not recorded (cells written before tvlens recorded each cell's device)"


def cell_devices(cells: list[dict]) -> dict[str, int]:
    """How many cells each device computed, in words (:func:`device_name` of the process
    that computed the cell, its torch threads included): ``device`` is the report writer's,
    which may not be the machine, or the share of it, that trained the cells."""
    counts = Counter(c.get("device") or UNRECORDED_DEVICE for c in cells)
    return dict(sorted(counts.items()))


def write_outputs(
    out: Path, cfg: CompareConfig, data: CompareData, device: str, tokenizer: Any = None
) -> tuple[dict, str, dict]:
    """Every output from the cells present (a partial compare writes a partial table, and
    says which cells are missing); ``device``: this process's, in words (each cell's own
    is counted in ``cell_devices``);
    ``tokenizer`` (the target's): to flag free or shared first tokens. Returns the summary,
    the table and the document of ``comparison.json``, which the caller writes with its
    result (:class:`~tvlens.compare.run.CompareResult`, which loads it back)."""

    cells, sweeps = load_cells(out, cfg)
    summary, records = summarize(cells, sweeps, cfg, data)
    flagged = first_token_flagged(data, tokenizer) if tokenizer is not None else None
    vs = verdicts(records, cfg, flagged)
    table = format_table(summary)
    overlap_csv, overlap_md = format_overlap(data)
    _write_text(out / "comparison.csv", _csv(summary, data))
    _write_text(out / "table.md", table)
    _write_text(out / "categories.md", format_categories(summary))
    _write_text(out / "verdicts.md", format_verdicts(vs, summary, list(cfg.methods)))
    _write_text(out / "verdict_sentences.md", verdict_sentences(vs))
    _write_text(out / "curves.md", format_curves(summary))
    _write_text(out / "overlap.csv", overlap_csv)
    _write_text(out / "overlap.md", overlap_md)
    states = {c: cell_state(cfg, out, c) for c in _cells(cfg, out)}
    missing = [str(c) + (" (stale: the sweep now chooses another variant)" if s == "stale" else "")
               for c, s in states.items() if s != "done"]  # fmt: skip
    doc = (
        {"tvlens": tvlens.__version__, "target": cfg.target, "device": device,
         "cell_devices": cell_devices([*sweeps, *(c for cs in cells.values() for c in cs)]),
         "split": data.describe(), "scale": cfg.scale_note, "config": cfg.to_dict(),
         "complete": not missing, "missing_cells": missing,
         "metric": "greedy whole-answer exact match (the verdicts' metric) and first answer "
                   "token over the whole vocabulary (argmax, secondary); means over tasks, then "
                   "mean ± std over seeds; 95% intervals and verdicts: hierarchical bootstrap "
                   "(tasks > queries > seeds) on exact match, TOST for equality, MDD beside each",
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
