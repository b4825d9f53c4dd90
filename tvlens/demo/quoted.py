"""The numbers the README and the docs quote, read from the committed result files.

A quoted number is written in Markdown as ``<!--q:KEY-->0.99<!--/q-->``: the comments do not
render (GitHub, mkdocs), the text between them is what :func:`quoted_numbers` computes for
``KEY`` from the committed JSON under ``figures/``. ``tvlens regenerate`` refills every
such span after rewriting the figures (:func:`refill_docs`); a test fails when a committed
page quotes a number its JSON does not hold (:func:`stale_quotes`), so no number in the docs
is typed by hand.

Each source is a function of one JSON file's content, returning ``{key: text}``; a new
result page adds its function to :data:`SOURCES`. This module reads JSON only (no model, no
torch).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tvlens.compare.sentences import verdict_summary
from tvlens.errors import TVLensError

QUOTE = re.compile(r"<!--q:([\w.\-]+)-->(.*?)<!--/q-->", re.S)
# The pages that quote numbers (relative to the repository root).
PAGES = ("README.md", "docs")


# A source: the JSON file's content and its folder -> {key: text}.
Source = Callable[[Any, Path], dict[str, str]]


def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def demo_numbers(d: dict[str, Any], folder: Path | None = None) -> dict[str, str]:
    """``figures/demo.json`` (written by ``tvlens regenerate``)."""
    tv = d["task_vectors"]["summary"]
    rows = [r for r in d["task_vectors"]["table"] if r["task"] != "mean"]

    def layers(m: str) -> str:  # the layers chosen on dev, over the tasks
        return " or ".join(str(x) for x in sorted({r[f"{m}_layer"] for r in rows}))

    pat, enc = d["patching"], d["task_encoding"]
    top = pat["heads_top"][0]
    last_td = enc["td_by_layer"][-1]
    out = {
        "demo.zero_shot": _f(tv["zero_shot"]),
        "demo.zero_shot3": _f(tv["zero_shot"], 3),
        "demo.icl": _f(tv["icl"]),
        "demo.icl3": _f(tv["icl"], 3),
        "demo.tv": _f(tv["hendel"]["task_vector"]),
        "demo.tv3": _f(tv["hendel"]["task_vector"], 3),
        "demo.tv_recovered": _pct(tv["hendel"]["recovered"]),
        "demo.fv": _f(tv["fv"]["task_vector"]),
        "demo.fv3": _f(tv["fv"]["task_vector"], 3),
        "demo.fv_recovered": _pct(tv["fv"]["recovered"]),
        "demo.tv_layers": layers("hendel"),
        "demo.fv_layers": layers("fv"),
        "demo.icl_step_0.9": str(d["first_step_with_icl_accuracy_0.9"]),
        "demo.final_icl_eval": _f(d["final_icl_evaluation"]["mean_first_token"], 3),
        "demo.td_final": " / ".join(_f(x) for x in last_td),
        "demo.td_steps": " / ".join(str(s) for s in enc["steps"]),
        "demo.heads_clean": _f(pat["heads_clean"]),
        "demo.heads_corrupted": _f(pat["heads_corrupted"]),
        "demo.top_head": f"L{top['layer']}H{top['head']}",
        "demo.top_head_layer": str(top["layer"]),
        "demo.top_head_index": str(top["head"]),
        "demo.top_head_effect": f"{top['effect']:+.2f}",
        "demo.spearman": _f(pat["heads_spearman_attribution_vs_exact"]),
        "demo.resid_top_effect": f"{pat['resid_top'][0]['effect']:+.2f}",
        "demo.seconds": f"{d['seconds']:.0f}",
    }
    if len(enc["td_by_layer"]) > 1:
        prev = enc["td_by_layer"][-2]
        out["demo.td_prev_step"] = str(enc["steps"][-2])
        out["demo.td_prev_max"] = _f(max(prev))
        out["demo.td_prev_max_block"] = str(max(range(len(prev)), key=prev.__getitem__))
    atv = d.get("atv") or {}
    if atv:
        out["demo.atv_minus_zero_shot"] = f"{atv['atv_minus_zero_shot']:+.2f}"
    return out


def _signed(x: float) -> str:
    """``+0.21`` / ``−0.28`` (a typographic minus, as the pages write it)."""
    return f"{x:+.2f}".replace("-", "−")


def _ci(iv: dict[str, Any] | None, signed: bool = False) -> str:
    if not iv:
        return "[n/a]"
    f = _signed if signed else _f
    return f"[{f(iv['low'])}, {f(iv['high'])}]"


def methods_table_numbers(prefix: str) -> Source:
    """A combined ``vectors.json`` of the method harness (``tvlens pretrained vectors
    --methods all``, then ``combine``): per suite and pooled (``all``), each row's mean exact
    match and first token with the 95% interval (tasks, then queries), each method's share of
    ICL, KL to ICL and difference to ICL, and the cost."""

    def numbers(d: dict[str, Any], folder: Path | None = None) -> dict[str, str]:
        methods = d["config"]["methods"]
        out: dict[str, str] = {}
        groups = {s: [r for r in d["rows"] if r["suite"] == s] for s in d["suites"]}
        groups["all"] = d["rows"]
        for s, rows in groups.items():
            iv = d["summary"].get("intervals", {}) if s == "all" else d["suites"][s]["intervals"]
            out[f"{prefix}.{s}.n_tasks"] = str(len(rows))

            def mean(key: str, rows: list[dict] = rows) -> float:
                return statistics.mean(r[key] for r in rows)

            for row in ("zero_shot", "icl", *methods):
                key = f"{prefix}.{s}.{row}"
                out[f"{key}.exact"] = _f(mean(f"{row}_exact"))
                out[f"{key}.first"] = _f(mean(row))
                out[f"{key}.exact_ci"] = _ci(iv.get(row, {}).get("exact"))
                if row in methods:
                    out[f"{key}.share"] = _pct(mean(f"{row}_recovered_exact"))
                    out[f"{key}.kl"] = _f(mean(f"{row}_kl"))
                elif row == "zero_shot":
                    out[f"{key}.kl"] = _f(mean("zero_shot_kl"))
                if row != "icl":
                    d_icl = iv.get(row, {}).get("exact_minus_icl")
                    if d_icl:
                        est = _signed(d_icl["estimate"])
                        out[f"{key}.minus_icl"] = f"{est} {_ci(d_icl, signed=True)}"
        cost = d["summary"].get("cost", {})
        icl_fwd = cost.get("icl_latency_s")
        for m in methods:
            c = cost.get(m)
            if not c or not icl_fwd:
                continue
            out[f"{prefix}.cost.{m}.extract_s"] = f"{c['extract_s']:.1f}"
            out[f"{prefix}.cost.{m}.forwards"] = f"{c['extract_forwards']:.0f}"
            out[f"{prefix}.cost.{m}.extract_per_icl"] = f"{c['extract_s'] / icl_fwd:,.0f}"
            out[f"{prefix}.cost.{m}.added_per_icl"] = f"{c['added_latency_s'] / icl_fwd:.2f}"
        records = _records(folder) if folder is not None else []
        out.update(_claims(prefix, d, groups, methods, records))
        if icl_fwd:
            out[f"{prefix}.cost.icl_ms"] = f"{1000 * icl_fwd:.1f}"
            out[f"{prefix}.cost.zero_shot_per_icl"] = f"{cost['zero_shot_latency_s'] / icl_fwd:.2f}"
        return out

    return numbers


# The margin within which two methods count as equal (TOST on the 90% interval).
CLAIM_MARGIN = 0.10


def _records(folder: Path) -> list[dict[str, Any]]:
    """Every suite's per-query records (``{suite}/queries.json``), tasks named by suite."""
    out = []
    for f in sorted(folder.glob("*/queries.json")):
        for r in json.loads(f.read_text())["queries"]:
            out.append({**r, "task": f"{f.parent.name}/{r['task']}"})
    return out


def _paired(records: list[dict], a: str, b: str, group: str | None) -> tuple[str, str]:
    """``a - b`` on exact match over the same queries (``group``: one suite's), by the
    hierarchical bootstrap: the estimate with its 95% interval, and the verdict word."""
    from tvlens.evaluation.stats import hierarchical_bootstrap, verdict_word  # pandas, numpy

    rs = [r for r in records if group is None or r["task"].startswith(f"{group}/")]
    res = hierarchical_bootstrap(rs, a, b, n_resamples=10_000, seed=0)
    lo, hi = res.interval(0.95)
    word = verdict_word((lo, hi), res.interval(0.90), CLAIM_MARGIN)
    text = f"{_signed(res.estimate)} [{_signed(lo)}, {_signed(hi)}]"
    return text, word


def _claims(
    prefix: str,
    d: dict[str, Any],
    groups: dict[str, list[dict]],
    methods: list[str],
    records: list[dict],
) -> dict[str, str]:
    """Each method against its paper's headline claim, by the rule the results page states
    (``reproduced`` / ``not reproduced`` / ``inconclusive`` / ``not comparable``): paired
    differences of exact match over the same queries, 95% intervals over tasks then queries,
    equality by TOST within :data:`CLAIM_MARGIN`."""
    out = {}
    rows = groups["all"]

    def exact(m: str, rows: list[dict]) -> float:
        return statistics.mean(r[f"{m}_exact"] for r in rows)

    def claim(key: str, a: str, b: str, group: str | None, wanted: tuple[str, ...]) -> None:
        text, word = _paired(records, a, b, group)
        out[f"{prefix}.claim.{key}.diff"] = text
        out[f"{prefix}.claim.{key}.word"] = word
        out[f"{prefix}.claim.{key}"] = (
            "reproduced" if word in wanted else "inconclusive" if word == "inconclusive"
            else "not reproduced"
        )  # fmt: skip

    if "hendel" in methods:  # Hendel et al.: the task vector keeps 83-91% of ICL (first token)
        good = [r for r in rows if r["icl"] >= 0.4]
        share = statistics.mean(r["hendel"] for r in good) / statistics.mean(r["icl"] for r in good)
        out[f"{prefix}.claim.hendel.share_first"] = _pct(share)
        out[f"{prefix}.claim.hendel.n_tasks"] = str(len(good))
        out[f"{prefix}.claim.hendel"] = "reproduced" if share >= 0.8 else "not reproduced"
    if not records:
        return out
    if "fv" in methods:  # Todd et al.: the FV makes zero-shot prompts do the task
        claim("fv", "fv", "zero_shot", None, ("better",))
    if "i2cl" in methods:  # Li et al. 2025: I2CL near few-shot accuracy at zero-shot cost
        claim("i2cl", "i2cl", "icl", None, ("equal", "better"))
    # state vectors (Li et al. 2024) and LTV (Saglam et al. 2025): above the task and function
    # vectors; LTV on the function-vector tasks, the files its paper evaluates on
    for m, group in (("state_vector", None), ("ltv", "abstractive")):
        rs = groups.get(group, rows) if group else rows
        if m in methods and {"hendel", "fv"} <= set(methods):
            best = max(("hendel", "fv"), key=lambda f: exact(f, rs))
            out[f"{prefix}.claim.{m}.best_fixed"] = {
                "hendel": "task vector",
                "fv": "function vector",
            }[best]
            claim(m, m, best, group, ("better",))
    if "icv" in methods:  # Liu et al.: style, safety, role-play and format tasks, not these
        out[f"{prefix}.claim.icv"] = "not comparable"
    return out


def threads_numbers(prefix: str) -> Source:
    """The rows of ``bench/threads.py --json``: per policy and number of competing
    processes the median training time, and its ratio to the same policy idle."""

    def numbers(rows: list[dict[str, Any]], folder: Path | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        cells: dict[tuple[str, int], list[float]] = {}
        for r in rows:
            cells.setdefault((r["policy"], r["load"]), []).append(r["train_s"])
        for (policy, load), times in cells.items():
            med = statistics.median(times)
            capped = any(r.get("timed_out") for r in rows
                         if r["policy"] == policy and r["load"] == load)  # fmt: skip
            out[f"{prefix}.{policy}.load{load}"] = (">" if capped else "") + f"{med:.1f} s"
            cells[(policy, load)] = [med]
        for (policy, load), (med,) in cells.items():
            idle = cells.get((policy, 0))
            if load and idle:
                out[f"{prefix}.{policy}.ratio{load}"] = f"{med / idle[0]:.2f}×"
        return out

    return numbers


def compare_numbers(prefix: str) -> Source:
    """A comparison's ``comparison.json``: ``PREFIX.verdicts`` (the claims' summary,
    :func:`tvlens.compare.sentences.verdict_summary`), ``PREFIX.claimN`` (claim N's word),
    and per method and group (``in_domain``, ``unseen``, with ``_heldout``) whole-answer
    exact match with its 95% interval (``PREFIX.METHOD.GROUP``), first token
    (``...GROUP.first``) and seeds (``PREFIX.METHOD.seeds``)."""

    def numbers(doc: dict[str, Any], folder: Path | None = None) -> dict[str, str]:
        vs = doc.get("verdicts") or []
        out = {f"{prefix}.verdicts": verdict_summary(vs)}
        out.update({f"{prefix}.claim{i}": v["verdict"] for i, v in enumerate(vs, 1)})
        for m, r in doc.get("methods", {}).items():
            if m.startswith("_") or "skipped" in r:
                continue
            out[f"{prefix}.{m}.seeds"] = str(len(r.get("seeds", [])))
            for g in ("in_domain", "in_domain_heldout", "unseen", "unseen_heldout"):
                if f"{g}_exact_match_mean" in r:
                    lo, hi = r[f"{g}_ci"]
                    out[f"{prefix}.{m}.{g}"] = (
                        f"{_f(r[f'{g}_exact_match_mean'])} [{_f(lo)}, {_f(hi)}]"
                    )
                    out[f"{prefix}.{m}.{g}.first"] = _f(r[f"{g}_first_token_mean"])
        return out

    return numbers


# (JSON file relative to the root, the function of its content)
SOURCES: tuple[tuple[str, Source], ...] = (
    ("figures/atv_compare/cpu_v3/comparison.json", compare_numbers("atv.cpu_v3")),
    ("figures/atv_compare/paper_cpu/comparison.json", compare_numbers("atv.paper_cpu")),
    ("figures/demo.json", demo_numbers),
    ("figures/pretrained/methods/vectors.json", methods_table_numbers("methods")),
    ("figures/benchmarks/threads_tiny.json", threads_numbers("threads.tiny")),
    ("figures/benchmarks/threads_default.json", threads_numbers("threads.default")),
)


def quoted_numbers(root: str | Path) -> dict[str, str]:
    """Every quotable key with its text, from the committed JSON under ``root`` (a source
    whose file is missing gives no keys)."""
    root = Path(root)
    out: dict[str, str] = {}
    for rel, fn in SOURCES:
        path = root / rel
        if not path.is_file():  # its keys are then unknown: a page quoting one is refused
            continue
        out.update(fn(json.loads(path.read_text()), path.parent))
    return out


def pages(root: str | Path) -> list[Path]:
    """The Markdown pages that may quote numbers."""
    root = Path(root)
    found = []
    for rel in PAGES:
        p = root / rel
        found += sorted(p.rglob("*.md")) if p.is_dir() else [p] if p.is_file() else []
    return found


def refill(text: str, numbers: dict[str, str], where: str = "") -> str:
    """``text`` with every quoted span set to its number; an unknown key is refused."""

    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in numbers:
            raise TVLensError(
                f"{where}: quotes an unknown number {key!r}: its JSON is missing (the command "
                "of its results page writes it) or no source gives the key "
                f"(tvlens.demo.quoted.SOURCES; known: {sorted({k.split('.')[0] for k in numbers})})"
            )
        return f"<!--q:{key}-->{numbers[key]}<!--/q-->"

    return QUOTE.sub(sub, text)


def stale_quotes(root: str | Path) -> list[str]:
    """``page: key quotes X, the JSON holds Y`` for every quoted span that differs."""
    root = Path(root)
    numbers = quoted_numbers(root)
    out = []
    for page in pages(root):
        for m in QUOTE.finditer(page.read_text()):
            key, text = m.group(1), m.group(2)
            want = numbers.get(key)
            if want != text:
                rel = page.relative_to(root)
                out.append(f"{rel}: {key} quotes {text!r}, the JSON holds {want!r}")
    return out


def refill_docs(root: str | Path) -> list[Path]:
    """Rewrite the quoted spans of every page under ``root`` from its committed JSON; the
    pages changed."""
    root = Path(root)
    numbers = quoted_numbers(root)
    changed = []
    for page in pages(root):
        old = page.read_text()
        new = refill(old, numbers, str(page.relative_to(root)))
        if new != old:
            page.write_text(new)
            changed.append(page)
    return changed


if __name__ == "__main__":  # python -m tvlens.demo.quoted [ROOT]: refill from committed JSON
    import sys

    for p in refill_docs(sys.argv[1] if len(sys.argv) > 1 else "."):
        print(f"refilled {p}")
