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
    ``atv`` entry; a method's ``to_dict`` from :func:`tvlens.atv.methods.compare`), or a
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
