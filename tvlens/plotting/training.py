"""Figures of a training run: ICL accuracy and loss over checkpoints (``metrics.json``)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tvlens.plotting.style import PALETTE
from tvlens.results import as_dict


def plot_icl_over_checkpoints(
    metrics: dict, title: str = "ICL accuracy over training"
) -> go.Figure:
    """Query accuracy per task (thin lines), their mean (thick) and the answer loss (right
    axis) at each checkpoint of a tvlens training run (``metrics.json``)."""
    ckpts = metrics["checkpoints"]
    if not ckpts:
        raise ValueError("metrics has no checkpoints to plot.")
    steps = [c["step"] for c in ckpts]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    tasks = list(ckpts[0]["icl_accuracy"])
    for i, t in enumerate(tasks):
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[c["icl_accuracy"][t] for c in ckpts],
                name=t,
                mode="lines",
                line={"width": 1, "color": PALETTE[i % len(PALETTE)]},
                opacity=0.6,
            ),
            secondary_y=False,
        )
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=[c["mean_icl_accuracy"] for c in ckpts],
            name="mean accuracy",
            mode="lines+markers",
            line={"width": 3, "color": "black"},
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=[c["loss"] for c in ckpts],
            name="answer loss",
            mode="lines",
            line={"width": 2, "dash": "dot", "color": "firebrick"},
        ),
        secondary_y=True,
    )
    fig.update_xaxes(title_text="training step (log)", type="log")
    fig.update_yaxes(title_text="query accuracy (first token)", range=[0, 1.02], secondary_y=False)
    fig.update_yaxes(title_text="loss on answer tokens", secondary_y=True, rangemode="tozero")
    fig.update_layout(title=title, template="plotly_white", legend={"font": {"size": 10}})
    return fig


def plot_accuracy_by_demo(
    metrics: dict, title: str = "Accuracy by demonstration index over training"
) -> go.Figure:
    """Accuracy on the answer of demonstration i (i = 0 .. k-1) and of the query (i = k).

    Answer 0 has no context to infer the task from, so it stays at chance; the rise of the
    later answers together is in-context learning emerging."""
    ckpts = metrics["checkpoints"]
    steps = [c["step"] for c in ckpts]
    n = len(ckpts[0]["accuracy_by_demo"])
    fig = go.Figure()
    for j in range(n):
        label = "query" if j == n - 1 else f"demo {j} (after {j} examples)"
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[c["accuracy_by_demo"][j] for c in ckpts],
                name=label,
                mode="lines+markers",
                line={"color": PALETTE[j % len(PALETTE)], "width": 3 if j == n - 1 else 1.5},
            )
        )
    fig.update_xaxes(title_text="training step (log)", type="log")
    fig.update_yaxes(title_text="accuracy (first answer token)", range=[0, 1.02])
    fig.update_layout(title=title, template="plotly_white")
    return fig


def plot_icl_accuracy(evaluation: Any, title: str = "ICL accuracy per task") -> go.Figure:
    """Bars: first-token and exact-match accuracy per task (an ``ICLEvaluation``)."""
    df = evaluation.to_dataframe()
    fig = go.Figure()
    for i, (col, name) in enumerate((("first_token", "first token"), ("exact_match", "exact"))):
        fig.add_bar(x=df["task"], y=df[col], name=name, marker_color=PALETTE[i])
    fig.update_layout(
        barmode="group", title=f"{title} (k={evaluation.k})", xaxis_title="task",
        yaxis_title="accuracy", yaxis_range=[0, 1.05], template="plotly_white",
    )  # fmt: skip
    return fig


def plot_finetune(result: Any, title: str = "TD by layer, before and after tuning") -> go.Figure:
    """TD per layer before (dotted) and after (solid) tuning the first / last blocks (a
    ``FinetuneResult``, or its ``to_dict()``)."""
    fig = go.Figure()
    rows = as_dict(result)["rows"]
    for i, r in enumerate(rows):
        layers = list(range(len(r["td_by_layer_after"])))
        for when, y, dash in (("before", r["td_by_layer_before"], "dot"),
                              ("after", r["td_by_layer_after"], "solid")):  # fmt: skip
            fig.add_trace(go.Scatter(
                x=layers, y=y, name=f"{r['which']} {r['blocks']} {when}", mode="lines+markers",
                line={"dash": dash, "color": PALETTE[i % len(PALETTE)]},
            ))  # fmt: skip
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="TD", range=[0, 1.02])
    fig.update_layout(title=title, template="plotly_white")
    return fig
