"""Figures of task encoding: task decodability (TD), projections, emergence over training,
perturbation."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tvlens.plotting.style import PALETTE
from tvlens.results import as_dict


def _series(td: Any) -> dict:
    """A TD series dict from a :class:`TDSeries`, its dict, a :class:`LayerTD` or its dict
    (one model: one line)."""
    td = as_dict(td)
    if "checkpoints" not in td and "td" in td:
        td = {"checkpoints": [{"revision": td.get("model") or "model", **td}]}
    return td


def plot_td_by_layer(td: Any, title: str = "Task decodability by layer") -> go.Figure:
    """TD per layer, one line per checkpoint: a :class:`TDSeries` (``td.json`` of ``tvlens
    probe``) or one model's :class:`LayerTD` (from ``td_by_layer``), or their dicts."""
    td = _series(td)
    fig = go.Figure()
    ck = td["checkpoints"]
    for i, c in enumerate(ck):
        last = i == len(ck) - 1
        fig.add_trace(
            go.Scatter(
                x=c["layers"],
                y=c["td"],
                name=c["revision"],
                mode="lines+markers",
                line={
                    "width": 3 if last else 1.2,
                    "color": f"rgba(31,119,180,{0.25 + 0.75 * (i + 1) / len(ck):.2f})",
                },
            )
        )
    chance = 1 / len(ck[0]["tasks"])
    fig.add_hline(y=chance, line_dash="dot", annotation_text="chance")
    fig.update_xaxes(title_text="layer", tickmode="array", tickvals=ck[0]["layers"])
    fig.update_yaxes(title_text="TD (leave-one-out 10-NN accuracy)", range=[0, 1.02])
    fig.update_layout(title=title, template="plotly_white")
    return fig


def plot_td_heatmap(td: Any, title: str = "Task decodability: layers × checkpoints") -> go.Figure:
    td = as_dict(td)
    fig = go.Figure(
        go.Heatmap(
            z=td["td"],
            x=td["revisions"],
            y=[f"L{layer}" for layer in td["layers"]],
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar={"title": "TD"},
        )
    )
    fig.update_xaxes(title_text="checkpoint")
    fig.update_yaxes(title_text="layer")
    fig.update_layout(title=title, template="plotly_white")
    return fig


def plot_td_vs_accuracy(td: Any, title: str = "TD against ICL accuracy") -> go.Figure:
    """One point per (task, checkpoint): TD at that checkpoint's peak layer vs accuracy."""
    td = as_dict(td)
    fig = go.Figure()
    ck = td["checkpoints"]
    for i, c in enumerate(ck):
        peak = c["layers"].index(c["peak_layer"])
        tasks = list(c["accuracy"])
        fig.add_trace(
            go.Scatter(
                x=[c["per_task"][peak][t] for t in tasks],
                y=[c["accuracy"][t] for t in tasks],
                text=tasks,
                mode="markers",
                name=c["revision"],
                marker={"size": 9, "color": PALETTE[i % len(PALETTE)]},
            )
        )
    pooled = td["correlations"]["pooled"]
    fig.update_xaxes(title_text="TD at the peak layer", range=[0, 1.02])
    fig.update_yaxes(title_text="ICL accuracy", range=[0, 1.02])
    if pooled["pearson_r"] is not None:  # undefined when every accuracy is equal
        title = f"{title} (pooled r = {pooled['pearson_r']:.2f}, R² = {pooled['r2']:.2f})"
    fig.update_layout(title=title, template="plotly_white")
    return fig


def plot_projection(xy, labels, title: str = "Last-query-token states (PCA)") -> go.Figure:
    fig = go.Figure()
    for i, name in enumerate(dict.fromkeys(labels)):
        pts = [p for p, lab in zip(xy, labels, strict=True) if lab == name]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                name=name,
                mode="markers",
                marker={"size": 6, "color": PALETTE[i % len(PALETTE)]},
            )
        )
    fig.update_layout(title=title, template="plotly_white", xaxis_title="PC 1", yaxis_title="PC 2")
    return fig


def plot_emergence(em: Any, layer: int | None = None, title: str | None = None) -> go.Figure:
    """Encoding and decoding over training (an ``EmergenceResult`` or its dict): per-task TD
    at one layer (default: the peak layer) on top, per-task loss below (log-scaled steps), and
    accuracy at the bottom for token suites."""
    em = as_dict(em)
    layer = em["peak_layer"] if layer is None else layer
    li = em["layers"].index(layer)
    has_acc = em.get("accuracy") is not None
    rows = 3 if has_acc else 2
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    steps = em["steps"]
    for i, t in enumerate(em["tasks"]):
        color = PALETTE[i % len(PALETTE)]
        common = {"x": steps, "mode": "lines+markers", "legendgroup": t, "marker": {"size": 4}}
        fig.add_trace(
            go.Scatter(
                y=[c[li][t] for c in em["td_per_task"]], name=t, line={"color": color}, **common
            ),
            row=1,
            col=1,
        )
        for row, key in enumerate(("loss", "accuracy") if has_acc else ("loss",), start=2):
            fig.add_trace(
                go.Scatter(
                    y=[c[t] for c in em[key]],
                    name=t,
                    showlegend=False,
                    line={"color": color},
                    **common,
                ),
                row=row,
                col=1,
            )
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=[row[li] for row in em["td"]],
            name="TD (all, incl. Null)",
            line={"color": "black", "width": 3},
        ),
        row=1,
        col=1,
    )
    fig.update_xaxes(type="log")  # every row: the steps are log-spaced checkpoints
    fig.update_xaxes(title_text="training step", row=rows, col=1)
    fig.update_yaxes(title_text=f"TD, layer {layer}", range=[0, 1.02], row=1, col=1)
    loss_name = "query CE" if has_acc else "query MSE"
    fig.update_yaxes(title_text=loss_name, row=2, col=1)
    if has_acc:
        fig.update_yaxes(title_text="accuracy", range=[0, 1.02], row=3, col=1)
    fig.update_layout(
        title=title or f"Task encoding (TD) and decoding (loss) over training ({em['kind']})",
        template="plotly_white",
        height=300 * rows,
    )
    return fig


def plot_perturbation(results: Any, title: str = "Perturbation: Δ loss") -> go.Figure:
    """One heatmap per ``PerturbationResult`` or its dict (e.g. an early and a late
    checkpoint; one result alone is fine): Δ query loss of task A (row) when B's (column)
    mean state is patched in."""
    if not isinstance(results, list | tuple):
        results = [results]
    results = [as_dict(r) for r in results]
    fig = make_subplots(
        rows=1,
        cols=len(results),
        subplot_titles=[
            f"step {r['step']}, layer {r['layer']} ({r['mode']})"
            + (f", TD {r['td_at_layer']:.2f}" if r.get("td_at_layer") is not None else "")
            for r in results
        ],
        horizontal_spacing=0.12,
    )
    zmax = max(max(abs(v) for row in r["delta_loss"] for v in row) for r in results) or 1.0
    for j, r in enumerate(results):
        fig.add_trace(
            go.Heatmap(
                z=r["delta_loss"],
                x=r["tasks"],
                y=r["tasks"],
                colorscale="RdBu_r",
                zmid=0,
                zmin=-zmax,
                zmax=zmax,
                colorbar={"title": "Δ loss"},
                showscale=j == 0,
            ),
            row=1,
            col=j + 1,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=j + 1)
        fig.update_xaxes(title_text="patched mean of task B", row=1, col=j + 1)
    fig.update_yaxes(title_text="prompts of task A", row=1, col=1)
    fig.update_layout(title=title, template="plotly_white")
    return fig
