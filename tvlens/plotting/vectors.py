"""Figures of task vectors and function vectors: accuracy by layer, AIE per head."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from tvlens.plotting.style import PALETTE
from tvlens.results import as_dict


def plot_layer_sweep(results: Any, title: str = "Task-vector accuracy by layer") -> go.Figure:
    """Mean test accuracy over tasks of zero-shot + vector at each layer, one line per method,
    with zero-shot and ICL accuracy as horizontal references (``results.json`` of
    ``tvlens vectors``, or the :class:`VectorReport` itself)."""
    data = as_dict(results)
    tasks = data["tasks"]
    methods = list(next(iter(tasks.values()))["methods"])
    first = next(iter(tasks.values()))["methods"]
    # A method whose dev grid is the layer (one accuracy per layer) is a curve; one that
    # writes every layer at once (ICV, I2CL, LTV: its grid is a strength, or nothing) is a
    # flat line at its test accuracy at the choice made on dev.
    by_layer = [m for m in methods if first[m]["best_layer"] >= 0 and not first[m].get("chosen")]
    n_layers = int(data.get("model", {}).get("n_layers") or 0) or (
        len(first[by_layer[0]]["test_by_layer"]) if by_layer else 1
    )
    layers = list(range(n_layers))
    fig = go.Figure()
    names = data.get("config", {}).get("labels", {})  # the extraction registry's labels
    for i, m in enumerate(methods):
        if m in by_layer:
            curve = [
                sum(t["methods"][m]["test_by_layer"][j] for t in tasks.values()) / len(tasks)
                for j in range(len(first[m]["test_by_layer"]))
            ]
            x, mode, dash = list(range(len(curve))), "lines+markers", None
        else:
            val = sum(t["methods"][m]["task_vector"] for t in tasks.values()) / len(tasks)
            x, curve, mode, dash = layers, [val] * n_layers, "lines", "dashdot"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=curve,
                name=names.get(m, m),
                mode=mode,
                line={"width": 3, "color": PALETTE[i % len(PALETTE)], "dash": dash},
            )
        )
    for key, label, dash in (("icl", "ICL", "dash"), ("zero_shot", "zero-shot", "dot")):
        val = sum(t[key] for t in tasks.values()) / len(tasks)
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=[val] * n_layers,
                name=f"{label} ({val:.2f})",
                mode="lines",
                line={"dash": dash, "color": "gray"},
            )
        )
    fig.update_xaxes(
        title_text="layer (vector written after this block, last token)",
        tickmode="array",
        tickvals=layers,
    )
    fig.update_yaxes(title_text="test accuracy (first answer token)", range=[0, 1.02])
    fig.update_layout(title=title, template="plotly_white")
    return fig


def plot_head_aie(aie, title: str = "Average indirect effect per head") -> go.Figure:
    """Layer × head heatmap of AIE (``[layer, head]`` tensor or nested list)."""
    z = aie.tolist() if hasattr(aie, "tolist") else aie
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"H{h}" for h in range(len(z[0]))],
            y=[f"L{layer}" for layer in range(len(z))],
            colorscale="RdBu",
            zmid=0,
            colorbar={"title": "AIE"},
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="layer")
    fig.update_xaxes(title_text="head")
    fig.update_layout(title=title, template="plotly_white")
    return fig


def _rows_and_labels(data: dict) -> tuple[list[str], dict[str, str]]:
    methods = list(data.get("config", {}).get("methods") or
                   next(iter(data["tasks"].values()))["methods"])  # fmt: skip
    return methods, data.get("config", {}).get("labels", {})


def plot_recovered_heatmap(
    results: Any,
    key: str = "recovered_exact",
    title: str = "Share of ICL accuracy recovered (exact match)",
) -> go.Figure:
    """Methods × tasks heatmap of the share of ICL accuracy each method recovers on the test
    queries (``key``: ``recovered_exact`` by greedy exact match, or ``recovered`` by first
    token), the value written in each cell (``results.json`` of ``tvlens vectors`` or the
    :class:`~tvlens.injection.evaluate.VectorReport`)."""
    data = as_dict(results)
    tasks = data["tasks"]
    methods, names = _rows_and_labels(data)
    z = [[tasks[t]["methods"][m].get(key, float("nan")) for t in tasks] for m in methods]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(tasks),
            y=[names.get(m, m) for m in methods],
            colorscale="Viridis",
            zmin=0.0,
            zmax=max(1.0, *(v for row in z for v in row if v == v)),
            text=[[f"{v:.2f}" for v in row] for row in z],
            texttemplate="%{text}",
            colorbar={"title": "share of ICL"},
        )
    )
    fig.update_xaxes(title_text="task")
    fig.update_yaxes(title_text="method", autorange="reversed")
    fig.update_layout(title=title, template="plotly_white")
    return fig


def plot_exact_match_intervals(
    results: Any,
    metric: str = "exact",
    title: str = "Exact-match accuracy on the test queries (95% bootstrap interval)",
) -> go.Figure:
    """One bar per row of the harness (zero-shot, ICL, each method): its mean accuracy over
    tasks (``metric``: ``exact`` or ``first_token``) with the 95% interval of the
    hierarchical bootstrap over tasks and queries (``results["intervals"]``)."""
    data = as_dict(results)
    intervals = data["intervals"]
    methods, names = _rows_and_labels(data)
    rows = [("zero_shot", "zero-shot"), ("icl", "ICL")] + [(m, names.get(m, m)) for m in methods]
    rows = [(r, label) for r, label in rows if r in intervals]
    est = [intervals[r][metric]["estimate"] for r, _ in rows]
    lo = [intervals[r][metric]["low"] for r, _ in rows]
    hi = [intervals[r][metric]["high"] for r, _ in rows]
    colors = ["lightgray", "gray"] + [PALETTE[i % len(PALETTE)] for i in range(len(methods))]
    fig = go.Figure(
        go.Bar(
            x=[label for _, label in rows],
            y=est,
            marker_color=colors[: len(rows)],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [h - e for h, e in zip(hi, est, strict=True)],
                "arrayminus": [e - low for e, low in zip(est, lo, strict=True)],
            },
            text=[f"{e:.2f}" for e in est],
            textposition="outside",
        )
    )
    what = "exact match" if metric == "exact" else "first token"
    fig.update_yaxes(title_text=f"test accuracy ({what})", range=[0, 1.1])
    fig.update_layout(title=title, template="plotly_white", showlegend=False)
    return fig
