"""Attribution patching (Nanda 2023; Syed et al. 2023): the first-order estimate of every patch's
effect, ``(a_source - a_corrupted) · ∂metric/∂a`` at the corrupted run, for all components at
once from two forward passes (source, corrupted) and one backward pass.

Results are :class:`~tvlens.patching.result.PatchResult` objects on the same scale as exact
patching (corrupted metric + estimated effect), so the two can be compared cell by cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import einops
import torch
from torch import Tensor

from tvlens.models import adapter
from tvlens.models.tvmodel import TVModel
from tvlens.patching.config import PatchConfig
from tvlens.patching.inputs import Tokens, metric_value, prepare, source_acts
from tvlens.patching.metrics import Metric
from tvlens.patching.result import PatchResult, make_result
from tvlens.tasks.prompts import PromptBatch


def _corrupted_with_grads(
    model: TVModel, corr: Tokens, hooks: list[str], metric: Metric
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """Corrupted logits, activations and ``∂metric/∂activation`` at ``hooks``."""
    bridge = model.bridge
    acts: dict[str, Tensor] = {}
    with torch.enable_grad(), bridge.hooks(fwd_hooks=adapter.keepers(acts, hooks, grad=True)):
        logits = bridge(corr.tokens, attention_mask=corr.attention_mask)
        value = metric(logits)
        # autograd.grad, not backward(): no gradients accumulate on the model's weights.
        grads = torch.autograd.grad(value, [acts[h] for h in hooks], allow_unused=True)
    out_grads = {
        h: torch.zeros_like(acts[h]) if g is None else g for h, g in zip(hooks, grads, strict=True)
    }
    return logits.detach(), {h: a.detach() for h, a in acts.items()}, out_grads


def attribution_patch(
    model: TVModel,
    clean: PromptBatch | Tensor | None,
    corrupted: PromptBatch | Tensor,
    metric: Metric,
    component: str = PatchConfig.component,  # `tvlens patch`'s defaults, written once
    positions: str = PatchConfig.positions,
    *,
    head_act: str = PatchConfig.head_act,
    layers: list[int] | None = None,
    source: Literal["clean", "mean", "zero"] | str | Mapping[str, Tensor] = "clean",
) -> PatchResult:
    """Attribution-patching estimate for the same components, positions and sources as
    :func:`tvlens.patching.patch` (arguments as there)."""
    corr, cln, layers, hooks = prepare(
        model, clean, corrupted, component, positions, head_act, layers
    )

    corr_logits, corr_acts, grads = _corrupted_with_grads(model, corr, hooks, metric)
    with torch.no_grad():
        src, clean_logits = source_acts(model, source, cln, corr_acts, hooks, positions)
        rows = []
        for h in hooks:
            a, g = corr_acts[h], grads[h]
            contrib = (src[h] - a) * g  # [batch, pos, d] or [batch, pos, head, d_head]
            per_pos = einops.reduce(contrib.float(), "b t ... d -> t ...", "sum")
            if positions == "all":
                rows.append(per_pos.sum(0))
            elif positions == "last":
                rows.append(per_pos[-1])
            else:
                rows.append(per_pos)
        corrupted_metric = metric_value(metric, corr_logits)
        values = torch.stack(rows).cpu() + corrupted_metric

    info = {"n_prompts": corr.tokens.shape[0], "n_pos": corr.tokens.shape[1]}
    return make_result(
        model, "attribution", values, component, positions, head_act, source, layers,
        metric, corrupted_metric, clean_logits, corr.tokens[0], info,
    )  # fmt: skip


def rank_correlation(exact: PatchResult, estimate: PatchResult) -> float:
    """Spearman rank correlation of two results' effects over all cells (NaN if undefined)."""
    from scipy import stats

    if exact.values.shape != estimate.values.shape:
        raise ValueError(
            f"Results differ in shape: {tuple(exact.values.shape)} vs "
            f"{tuple(estimate.values.shape)} (same component, positions and layers needed)."
        )
    x, y = exact.effect().flatten().numpy(), estimate.effect().flatten().numpy()
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)
