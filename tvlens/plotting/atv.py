"""Figures of steering methods compared on the same queries (zero-shot, ICL, ATV...)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from tvlens.plotting.style import PALETTE
from tvlens.results import as_dict


def plot_method_comparison(
    comparison: Any, title: str = "Zero-shot, ICL and ATV on held-out queries"
) -> go.Figure:
    """Grouped bars: first-token accuracy per task (x) for each method (one bar colour each),
    from ``{"methods": {name: {"tasks": {task: {"first_token": ...}}}}}`` (the demo's
    ``atv`` entry; a method's ``to_dict`` from :func:`tvlens.compare.methods.compare`), or a
    list of ``MethodResult`` objects."""
    if isinstance(comparison, list | tuple):
        comparison = {"methods": {r.method: as_dict(r) for r in comparison}}
    fig = go.Figure()
    for i, (name, m) in enumerate(comparison["methods"].items()):
        tasks = list(m["tasks"])
        fig.add_bar(
            name=f"{name} ({m['mean_first_token']:.2f})",
            x=tasks,
            y=[m["tasks"][t]["first_token"] for t in tasks],
            marker_color=PALETTE[i % len(PALETTE)],
        )
    fig.update_layout(
        barmode="group",
        title=title,
        xaxis_title="task (held-out test queries)",
        yaxis_title="first-token accuracy",
        yaxis_range=[0, 1.05],
        legend_title="method (mean)",
        template="plotly_white",
    )
    return fig


def plot_compare_bars(summary: dict, title: str = "Accuracy by method") -> go.Figure:
    """Grouped bars: in-domain and unseen whole-answer exact match per method with their 95%
    bootstrap intervals (``summary``: the compare's rows by method)."""
    names = list(summary)
    fig = go.Figure()
    for g, label, color in (("in_domain", "in-domain", PALETTE[0]),
                            ("unseen", "unseen", PALETTE[1])):  # fmt: skip
        y = [summary[m][f"{g}_exact_match_mean"] for m in names]
        lo = [summary[m][f"{g}_ci"][0] for m in names]
        hi = [summary[m][f"{g}_ci"][1] for m in names]
        fig.add_bar(
            x=names, y=y, name=label, marker_color=color,
            error_y={"type": "data", "symmetric": False,
                     "array": [h - v for h, v in zip(hi, y, strict=True)],
                     "arrayminus": [v - lo_ for lo_, v in zip(lo, y, strict=True)]},
        )  # fmt: skip
    fig.update_layout(
        title=title, barmode="group", template="plotly_white",
        yaxis={"title": "exact match (95% interval: tasks > queries > seeds)", "range": [0, 1]},
    )  # fmt: skip
    return fig


def plot_compare_heatmap(summary: dict, data, title: str | None = None) -> go.Figure:
    """Methods × tasks: mean first-token accuracy (unseen tasks marked with *)."""
    names = list(summary)
    cols = [("in_domain", t) for t in data.in_domain.tasks] + [
        ("unseen", t) for t in data.unseen.tasks
    ]
    z = [[summary[m][f"{g}_tasks"][t] for g, t in cols] for m in names]
    labels = [t + ("*" if g == "unseen" else "") for g, t in cols]
    fig = go.Figure(
        go.Heatmap(z=z, x=labels, y=names, zmin=0, zmax=1, colorscale="Viridis",
                   colorbar={"title": "acc"})
    )  # fmt: skip
    fig.update_layout(
        title=title or "First-token accuracy per task (* unseen)", template="plotly_white",
        yaxis={"autorange": "reversed"},
    )  # fmt: skip
    return fig


def plot_learning_curves(summary: dict, sweeps: dict | None = None) -> go.Figure:
    """Dev accuracy against training step: one line per trained method (its selected
    variant, seed 0), and the sweep's other variants dotted."""
    fig = go.Figure()
    for i, (m, r) in enumerate((m, r) for m, r in summary.items() if r.get("curve")):
        color = PALETTE[i % len(PALETTE)]
        chosen = r.get("selected", {}).get("label")
        for label, v in (sweeps or {}).get(m, {}).items():
            if label != chosen and v.get("curve"):
                fig.add_scatter(x=[e["step"] for e in v["curve"]],
                                y=[e["dev_acc"] for e in v["curve"]], mode="lines",
                                line={"color": color, "dash": "dot", "width": 1},
                                name=f"{m} {label}", legendgroup=m, showlegend=False)  # fmt: skip
        fig.add_scatter(x=[e["step"] for e in r["curve"]], y=[e["dev_acc"] for e in r["curve"]],
                        mode="lines+markers", line={"color": color}, name=m,
                        legendgroup=m)  # fmt: skip
    fig.update_layout(
        title="Dev accuracy per epoch (selected variant solid, other sweep variants dotted)",
        xaxis_title="training step", yaxis_title="dev first-token accuracy",
        yaxis_range=[0, 1.02], template="plotly_white",
    )  # fmt: skip
    return fig


def plot_overlap(data) -> go.Figure:
    """The share of each task's inputs that are also inputs of each in-domain task."""
    ind = data.in_domain.tasks
    rows = [*data.in_domain.tasks, *data.unseen.tasks]
    z = [[data.overlap[t].get(d) for d in ind] for t in rows]
    fig = go.Figure(go.Heatmap(z=z, x=ind, y=[t + ("*" if t in data.unseen.tasks else "")
                                              for t in rows],
                               zmin=0, zmax=1, colorscale="Blues",
                               colorbar={"title": "share"}))  # fmt: skip
    fig.update_layout(
        title="Input overlap with the in-domain tasks (* unseen)", template="plotly_white",
        yaxis={"autorange": "reversed"},
    )  # fmt: skip
    return fig
