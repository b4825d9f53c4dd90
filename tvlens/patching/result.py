"""The result of a patching call: :class:`PatchResult` (one metric value per patched component,
with its effect, normalised effect, top components, JSON and a tidy ``to_dataframe``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvlens.frames import patch_frame
from tvlens.models.tvmodel import TVModel
from tvlens.patching.inputs import metric_value
from tvlens.patching.metrics import Metric, metric_name
from tvlens.plotting import plot_patching
from tvlens.results import Result


@dataclass
class PatchResult(Result):
    """Metric of the patched run for every component (``values``, axes named by ``dims``).

    For ``method="attribution"`` the values are the corrupted metric plus the first-order
    estimate of each patch's effect, on the same scale as exact patching.
    """

    values: Float[Tensor, "..."]
    dims: tuple[str, ...]
    component: str
    positions: str
    method: str
    metric: str
    clean_metric: float
    corrupted_metric: float
    layers: list[int]
    pos_labels: list[str] = field(default_factory=list)
    head_act: str | None = None
    source: str = "clean"
    model: str = ""
    info: dict = field(default_factory=dict)

    def effect(self) -> Float[Tensor, "..."]:
        """Change of the metric caused by each patch."""
        return self.values - self.corrupted_metric

    def normalized(self) -> Float[Tensor, "..."]:
        """0 = corrupted run, 1 = clean run (undefined, NaN, when both runs agree)."""
        gap = self.clean_metric - self.corrupted_metric
        return self.effect() / gap if gap != 0 else torch.full_like(self.values, float("nan"))

    def top(self, k: int = 10) -> list[tuple[dict[str, int], float]]:
        """The ``k`` components of largest absolute effect, as ``({dim: index}, effect)``."""
        eff = self.effect()
        order = torch.argsort(eff.abs().flatten(), descending=True)[:k]
        out = []
        for i in order.tolist():
            idx = torch.unravel_index(torch.tensor(i), eff.shape)
            where = {d: int(j) for d, j in zip(self.dims, idx, strict=True)}
            if "layer" in where:
                where["layer"] = self.layers[where["layer"]]
            out.append((where, float(eff.flatten()[i])))
        return out

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy: one row per component, a column per dim (``layer`` is the model's layer;
        ``pos_label`` beside ``pos``), then ``value``, ``effect``, ``normalized``."""

        return patch_frame(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "component": self.component,
            "positions": self.positions,
            "head_act": self.head_act,
            "method": self.method,
            "metric": self.metric,
            "source": self.source,
            "dims": list(self.dims),
            "layers": self.layers,
            "pos_labels": self.pos_labels,
            "clean_metric": self.clean_metric,
            "corrupted_metric": self.corrupted_metric,
            "values": self.values.tolist(),
            "normalized": self.normalized().tolist(),
            "top": [{**w, "effect": e} for w, e in self.top(10)],
            "info": self.info,
        }

    def plot(self, **kwargs):

        return plot_patching(self, **kwargs)


def result_dims(component: str, positions: str) -> tuple[str, ...]:
    """Axis names of a result: ``layer``, then ``pos`` (one position at a time), ``head``."""
    return (
        ("layer",)
        + (("pos",) if positions == "each" else ())
        + (("head",) if component == "heads" else ())
    )


def make_result(
    model: TVModel,
    method: str,
    values: Float[Tensor, "..."],
    component: str,
    positions: str,
    head_act: str,
    source: str | Mapping[str, Tensor],
    layers: list[int],
    metric: Metric,
    corrupted_metric: float,
    clean_logits: Float[Tensor, "batch _ d_vocab"] | None,
    tokens: Int[Tensor, " pos"],
    info: dict,
) -> PatchResult:
    """A :class:`PatchResult` of exact or attribution patching, with the clean and corrupted
    metric and the position labels of one prompt."""
    return PatchResult(
        values=values,
        dims=result_dims(component, positions),
        component=component,
        positions=positions,
        method=method,
        metric=metric_name(metric),
        clean_metric=float("nan") if clean_logits is None else metric_value(metric, clean_logits),
        corrupted_metric=corrupted_metric,
        layers=layers,
        pos_labels=position_labels(model, tokens),
        head_act=head_act if component == "heads" else None,
        source=source if isinstance(source, str) else "given",
        model=model.spec.name,
        info=info,
    )


def position_labels(model: TVModel, tokens: Int[Tensor, " pos"]) -> list[str]:
    """``"i tok"`` for each position of one prompt (readable axis labels)."""
    tok = model.tokenizer
    ids = tokens.tolist()
    words = tok.convert_ids_to_tokens(ids) if tok is not None else [str(i) for i in ids]
    # Escape whitespace tokens (a bare newline makes an empty tick label).
    return [f"{i} {w.encode('unicode_escape').decode() or '∅'}" for i, w in enumerate(words)]
