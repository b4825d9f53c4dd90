"""Plotly figures, saved as interactive HTML always and as static PNG when possible.

PNG export goes through kaleido, which drives a Chrome/Chromium it finds on the machine
(``bash install.sh --png`` installs one). Without one, HTML is still written, the PNG is
skipped with one :class:`PngWarning` (unless ``require_png=True``), and kaleido is never
started, so it never tries to fetch a browser. ``TVLENS_NO_PNG=1`` takes the same path on a
machine that has a browser. Each folder's ``figures.json`` records which files were written.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


NO_PNG_ENV = "TVLENS_NO_PNG"  # "1": write HTML only, as on a machine without a browser
PNG_HINT = "for PNG figures run `bash install.sh --png` (installs Chromium for kaleido)"
FIGURES_FILE = "figures.json"


class PngWarning(UserWarning):
    """PNG figures were not written (HTML figures were)."""


@dataclass(frozen=True)
class SavedFigure:
    html: Path
    png: Path | None
    png_skipped: str | None = None  # why there is no PNG


# Why PNGs were skipped in this process (the CLI prints it once after a command).
_skipped: list[str] = []


def png_unavailable() -> str | None:
    """Why PNG figures cannot be written here (None when they can): ``TVLENS_NO_PNG`` is set,
    or kaleido finds no Chrome/Chromium. Looks only; never downloads a browser."""
    if os.environ.get(NO_PNG_ENV, "").strip().lower() in ("1", "true", "yes"):
        return f"{NO_PNG_ENV} is set"
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:
        return "kaleido is not installed"
    try:
        found = Chromium.find_browser(skip_local=False)
    except Exception:  # a broken browser install reads as none
        found = None
    return None if found else "no Chrome/Chromium found"


def png_skipped_reason(clear: bool = False) -> str | None:
    """Why PNGs were skipped since the last ``clear`` (None if none were)."""
    reason = _skipped[-1] if _skipped else None
    if clear:
        _skipped.clear()
    return reason


def save_figure(
    fig: go.Figure,
    stem: str | Path,
    require_png: bool = False,
    width: int = 900,
    height: int = 500,
    scale: float = 2.0,
) -> SavedFigure:
    """Write ``stem.html`` (self-contained) always and ``stem.png`` when a browser is there
    (else :class:`PngWarning`, or an error with ``require_png``); record both in the folder's
    ``figures.json``."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    html = stem.with_suffix(".html")
    fig.write_html(html, include_plotlyjs="cdn")
    png: Path | None = stem.with_suffix(".png")
    reason = png_unavailable()
    if reason is None:
        try:
            fig.write_image(png, width=width, height=height, scale=scale)
        except Exception as e:  # kaleido raises several types when the browser fails
            reason = f"kaleido failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if reason is not None:
        if require_png:
            raise RuntimeError(f"Could not write {png} ({reason}): {PNG_HINT}.")
        png = None
        _skipped.append(reason)
        # One message for every figure, so that Python shows it once per process.
        warnings.warn(f"PNG not written ({reason}); HTML is. {PNG_HINT}.", PngWarning, 2)
    _record(stem, html, png, reason)
    return SavedFigure(html, png, reason)


def _record(stem: Path, html: Path, png: Path | None, reason: str | None) -> None:
    """Add this figure to ``figures.json`` beside it: which files exist, and why no PNG."""
    path = stem.parent / FIGURES_FILE
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        data = {}
    data[stem.name] = {
        "html": html.name,
        "png": png.name if png is not None else None,
        "png_skipped": reason,
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_json(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return path


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


def plot_layer_sweep(results: dict, title: str = "Task-vector accuracy by layer") -> go.Figure:
    """Mean test accuracy over tasks of zero-shot + vector at each layer, one line per method,
    with zero-shot and ICL accuracy as horizontal references (``results.json`` of
    ``tvlens vectors``)."""
    tasks = results["tasks"]
    methods = list(next(iter(tasks.values()))["methods"])
    n_layers = len(next(iter(tasks.values()))["methods"][methods[0]]["test_by_layer"])
    layers = list(range(n_layers))
    fig = go.Figure()
    names = {"hendel": "task vector (Hendel, replace)", "fv": "function vector (add)"}
    for i, m in enumerate(methods):
        curve = [
            sum(t["methods"][m]["test_by_layer"][j] for t in tasks.values()) / len(tasks)
            for j in layers
        ]
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=curve,
                name=names.get(m, m),
                mode="lines+markers",
                line={"width": 3, "color": PALETTE[i]},
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


def plot_td_by_layer(td: dict, title: str = "Task decodability by layer") -> go.Figure:
    """TD per layer, one line per checkpoint (``td.json`` of ``tvlens probe``)."""
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


def plot_td_heatmap(td: dict, title: str = "Task decodability: layers × checkpoints") -> go.Figure:
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


def plot_td_vs_accuracy(td: dict, title: str = "TD against ICL accuracy") -> go.Figure:
    """One point per (task, checkpoint): TD at that checkpoint's peak layer vs accuracy."""
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


def plot_emergence(em: dict, layer: int | None = None, title: str | None = None) -> go.Figure:
    """Encoding and decoding over training (an ``EmergenceResult.to_dict()``): per-task TD at
    one layer (default: the peak layer) on top, per-task loss below (log-scaled steps), and
    accuracy at the bottom for token suites."""
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
        fig.add_trace(
            go.Scatter(
                y=[c[t] for c in em["loss"]],
                name=t,
                showlegend=False,
                line={"color": color},
                **common,
            ),
            row=2,
            col=1,
        )
        if has_acc:
            fig.add_trace(
                go.Scatter(
                    y=[c[t] for c in em["accuracy"]],
                    name=t,
                    showlegend=False,
                    line={"color": color},
                    **common,
                ),
                row=3,
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


def plot_perturbation(results: list[dict], title: str = "Perturbation: Δ loss") -> go.Figure:
    """One heatmap per ``PerturbationResult.to_dict()`` (e.g. an early and a late checkpoint):
    Δ query loss of task A (row) when B's (column) mean state is patched in."""
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


def plot_method_comparison(
    comparison: dict, title: str = "Zero-shot, ICL and ATV on held-out queries"
) -> go.Figure:
    """Grouped bars: first-token accuracy per task (x) for each method (one bar colour each),
    from ``{"methods": {name: {"tasks": {task: {"first_token": ...}}}}}`` (the demo's
    ``atv`` entry; a method's ``to_dict`` from :func:`tvlens.atv.methods.compare`)."""
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
