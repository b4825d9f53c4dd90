"""Grouped bars of a result's table: one group per row label (e.g. a task), one bar per value
column (the ``plot()`` of the pretrained experiments' reports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from tvlens.plotting.style import PALETTE


def plot_table_bars(
    rows: Sequence[dict[str, Any]],
    x: str,
    ys: Sequence[str],
    title: str,
    y_title: str = "",
    y_range: tuple[float, float] | None = None,
) -> go.Figure:
    """Bars of the columns ``ys`` for each row, grouped by the row's ``x`` (rows with the same
    ``x`` in several suites are labelled ``suite/x``)."""
    labels = [f"{r['suite']}/{r[x]}" if "suite" in r else str(r[x]) for r in rows]
    fig = go.Figure()
    for i, y in enumerate(ys):
        fig.add_bar(name=y, x=labels, y=[r.get(y) for r in rows],
                    marker_color=PALETTE[i % len(PALETTE)])  # fmt: skip
    fig.update_layout(barmode="group", title=title, xaxis_title=x, yaxis_title=y_title,
                      template="plotly_white")  # fmt: skip
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    return fig
