"""Figures of activation patching (a :class:`tvlens.patching.PatchResult`)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from tvlens.plotting.style import PALETTE


def plot_patching(result: Any, title: str | None = None) -> go.Figure:
    """Heatmap of a :class:`tvlens.patching.PatchResult`: layers × positions (token labels),
    layers × heads, or (layer, head) × positions; a bar chart for one value per layer.

    Colour: the normalized effect (0 = corrupted run, 1 = clean run) when the clean run differs
    from the corrupted one, else the change of the metric.
    """
    norm = result.normalized()
    use_norm = not bool(norm.isnan().all())
    z = norm if use_norm else result.effect()
    label = "normalized effect" if use_norm else f"Δ {result.metric}"
    layers = [f"L{x}" for x in result.layers]
    dims = tuple(result.dims)
    what = result.component + (f" ({result.head_act})" if result.head_act else "")
    title = title or (
        f"{result.method.capitalize()} patching: {what}, positions={result.positions}, "
        f"metric={result.metric}"
    )
    if dims == ("layer",):
        fig = go.Figure(go.Bar(x=layers, y=z.tolist(), marker_color=PALETTE[0]))
        fig.update_yaxes(title_text=label)
        fig.update_xaxes(title_text="layer")
        fig.update_layout(title=title, template="plotly_white")
        return fig
    if dims == ("layer", "head"):
        x, y, zz = [f"H{h}" for h in range(z.shape[1])], layers, z.tolist()
        xt = "head"
    elif dims == ("layer", "pos"):
        x, y, zz, xt = result.pos_labels, layers, z.tolist(), "position"
    elif dims == ("layer", "pos", "head"):
        x = result.pos_labels
        y = [f"L{la}H{h}" for la in result.layers for h in range(z.shape[2])]
        zz = z.permute(0, 2, 1).reshape(-1, z.shape[1]).tolist()
        xt = "position"
    else:
        raise ValueError(f"Cannot plot a result with dims {dims}.")
    fig = go.Figure(
        go.Heatmap(z=zz, x=x, y=y, colorscale="RdBu", zmid=0, colorbar={"title": label})
    )
    fig.update_yaxes(autorange="reversed", title_text="layer" if len(y) == len(layers) else "")
    fig.update_xaxes(title_text=xt, type="category", tickangle=-45 if xt == "position" else 0)
    fig.update_layout(title=title, template="plotly_white")
    return fig
