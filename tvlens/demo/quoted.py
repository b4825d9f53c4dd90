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

from tvlens.errors import TVLensError

QUOTE = re.compile(r"<!--q:([\w.\-]+)-->(.*?)<!--/q-->", re.S)
# The pages that quote numbers (relative to the repository root).
PAGES = ("README.md", "docs")


def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def demo_numbers(d: dict[str, Any]) -> dict[str, str]:
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


def vector_table_numbers(prefix: str) -> Callable[[dict[str, Any]], dict[str, str]]:
    """A ``vectors.json`` of ``tvlens pretrained vectors``: per suite and overall, each
    method's mean first-token and exact-match accuracy and share of ICL."""

    def numbers(d: dict[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        summary = d.get("summary", {})
        for key, value in _flat(summary).items():
            if isinstance(value, float):
                out[f"{prefix}.{key}"] = _pct(value) if "recovered" in key else _f(value)
        return out

    return numbers


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def threads_numbers(prefix: str) -> Callable[[Any], dict[str, str]]:
    """The rows of ``bench/threads.py --json``: per policy and number of competing
    processes the median training time, and its ratio to the same policy idle."""

    def numbers(rows: list[dict[str, Any]]) -> dict[str, str]:
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


# (JSON file relative to the root, the function of its content)
SOURCES: tuple[tuple[str, Callable[[dict[str, Any]], dict[str, str]]], ...] = (
    ("figures/demo.json", demo_numbers),
    ("figures/benchmarks/threads_tiny.json", threads_numbers("threads.tiny")),
    ("figures/benchmarks/threads_default.json", threads_numbers("threads.default")),
)


def quoted_numbers(root: str | Path) -> dict[str, str]:
    """Every quotable key with its text, from the committed JSON under ``root``."""
    root = Path(root)
    out: dict[str, str] = {}
    for rel, fn in SOURCES:
        path = root / rel
        if not path.is_file():
            raise TVLensError(f"{rel} is missing: run `tvlens regenerate` to write it.")
        out.update(fn(json.loads(path.read_text())))
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
                f"{where}: quotes an unknown number {key!r}; known keys start with "
                f"{sorted({k.split('.')[0] for k in numbers})} (tvlens.demo.quoted.SOURCES)."
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
