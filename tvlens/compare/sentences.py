"""The comparison's verdicts as Markdown, generated from :func:`tvlens.compare.report.verdicts`'
output (the ``verdicts`` list of ``comparison.json``), never typed by hand: the full sentences
and table of a run's ``verdicts.md``, and the short summary the README and the results page
quote (:mod:`tvlens.demo.quoted`). Plain formatting: no numpy, no torch."""

from __future__ import annotations

from typing import Any

INSTRUCTIONS = {"train": "training instructions", "heldout": "held-out instruction"}


def _n(x: float) -> str:
    return f"{x:+.3f}"


def verdict_sentences(vs: list[dict[str, Any]]) -> str:
    """Markdown sentences for the README and the results page, generated from
    :func:`verdicts`' output (never typed by hand): one per claim, with its words per
    instruction set and its tests' numbers."""
    lines = []
    for v in vs:
        by = "; ".join(f"{INSTRUCTIONS[k]}: {w}" for k, w in v.get("by_instructions", {}).items())
        why = f" ({v['why']})" if v.get("why") else ""
        lines.append(f"- **{v['claim']}**: {v['verdict']}{why} on whole-answer exact match"
                     + (f" ({by})." if by else "."))  # fmt: skip
        if v.get("not_run") and v["tests"]:
            lines.append(f"  - not run (a method without results): {', '.join(v['not_run'])}")
        for t in v["tests"]:
            tost = ""
            if t["margin"] is not None:
                inside = "inside" if t["within_margin"] else "not inside"
                tost = (f", TOST 90% [{_n(t['ci_tost'][0])}, {_n(t['ci_tost'][1])}] {inside} "
                        f"±{t['margin']:g}")  # fmt: skip
            lines.append(
                f"  - {t['method']} − {t['baseline']} ({t['group']}, "
                f"{INSTRUCTIONS[t['instructions']]}): {_n(t['estimate'])}, 95% "
                f"[{_n(t['ci'][0])}, {_n(t['ci'][1])}]{tost} → {t['label']} (MDD "
                f"{t['mdd']:.3f})"
            )
    if vs:
        v0 = vs[0]
        lines.append(f"\nIntervals: {' > '.join(v0['levels'])} resampled {v0['n_resamples']:,} "
                     "times (hierarchical bootstrap, tvlens.evaluation.stats); MDD: the "
                     "smallest difference a two-sided 5% test detects with 80% power.")  # fmt: skip
    return "\n".join(lines) + "\n"


def verdict_table(vs: list[dict[str, Any]]) -> str:
    """Markdown: every test behind the verdicts, exact match first, first token beside it
    (with the count of test queries whose first token is free or shared)."""
    head = ["comparison", "group", "instructions", "exact match", "95% interval",
            "TOST 90% interval", "verdict", "MDD", "first token [95%]", "first-token flagged",
            "tasks", "queries", "seeds"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in vs:
        for t in v["tests"]:
            ft = t["first_token"]
            lines.append("| " + " | ".join([
                f"{t['method']} − {t['baseline']}", t["group"], INSTRUCTIONS[t["instructions"]],
                _n(t["estimate"]), f"[{_n(t['ci'][0])}, {_n(t['ci'][1])}]",
                f"[{_n(t['ci_tost'][0])}, {_n(t['ci_tost'][1])}]", t["label"], f"{t['mdd']:.3f}",
                f"{_n(ft['estimate'])} [{_n(ft['ci'][0])}, {_n(ft['ci'][1])}]",
                str(ft.get("flagged_queries", "-")), str(t["n_tasks"]), str(t["n_queries"]),
                str(t["n_seeds"]),
            ]) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _short(t: dict[str, Any]) -> str:
    return (f"{t['method']} − {t['baseline']} {_n(t['estimate'])} [{_n(t['ci'][0])}, "
            f"{_n(t['ci'][1])}] {t['word']} (MDD {t['mdd']:.2f})")  # fmt: skip


def verdict_summary(vs: list[dict[str, Any]]) -> str:
    """One bullet per claim: its verdict (per instruction set), then its tests with the
    training instructions, each as difference [95% interval] word (minimal detectable
    difference); the held-out instruction's words follow where they differ."""
    lines = []
    for v in vs:
        by = v.get("by_instructions", {})
        held = f"; held-out instruction: {by['heldout']}" if "heldout" in by else ""
        why = f" ({v['why']})" if v.get("why") else ""
        tests = [t for t in v["tests"] if t["instructions"] == "train"]
        other = {(t["method"], t["baseline"]): t for t in v["tests"]
                 if t["instructions"] == "heldout"}  # fmt: skip
        parts = []
        for t in tests:
            h = other.get((t["method"], t["baseline"]))
            differs = h is not None and h["word"] != t["word"]
            parts.append(_short(t) + (f" (held-out: {h['word']})" if differs else ""))
        lines.append(f"- **{v['claim']}: {v['verdict']}**{why}"
                     + (f" (training instructions: {by.get('train', '-')}{held})" if by else "")
                     + (": " + "; ".join(parts) + "." if parts else "."))  # fmt: skip
    return "\n".join(lines)
