"""Activation patching: residual stream, attention output, MLP output and attention heads, from a
clean run (or a mean / zero ablation) into a corrupted run, one metric value per component.

Each patched copy recomputes only what its patch can change (:mod:`tvlens.models.resume`):

- a patch at layer ``l`` resumes from the corrupted run's residual entering block ``l``, so
  blocks ``0..l-1`` are not run again;
- a patch from position ``p`` on leaves positions ``< p`` untouched (causal attention), so
  their keys/values come from the corrupted run's KV cache and only positions ``p..`` run;
  ``positions="last"`` (function-vector AIE, task-vector sweeps) recomputes one token;
- copies that resume at the same layer and position share one forward pass, laid along the
  batch (prompt-major), at most ``max_batch`` rows at a time.

Each of these shortcuts is taken only where its assumption holds for the loaded model (checked;
``PatchResult.info["fast_paths"]`` says which were taken), else the copy is recomputed: see
:mod:`tvlens.models.resume` and the comments in :func:`patch` and its helpers.

TransformerLens's ``patching`` functions run one full forward pass per component; the results
here equal theirs (tests, 1e-5 in float32) at a fraction of the work (``bench/patching.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tvlens.errors import ConfigError
from tvlens.models import adapter
from tvlens.models.resume import (
    cache_prefix,
    can_pack,
    can_skip_blocks,
    corrupted_run,
    fixed_attention,
    last_position_mlp,
    resume,
    resume_packed,
)
from tvlens.models.tvmodel import TVModel
from tvlens.patching.attn_shortcut import linear_heads, may_skip_attention, patched_attention
from tvlens.patching.attribution import attribution_patch
from tvlens.patching.config import PatchConfig
from tvlens.patching.copies import Job, group_jobs, plan_jobs, writer
from tvlens.patching.inputs import (
    Component,
    HeadAct,
    Positions,
    Tokens,
    metric_value,
    prepare,
    source_acts,
)
from tvlens.patching.metrics import Metric
from tvlens.patching.result import PatchResult, make_result, result_dims
from tvlens.runs.config import MAX_BATCH
from tvlens.tasks.prompts import PromptBatch


@torch.no_grad()
def patch(
    model: TVModel,
    clean: PromptBatch | Tensor | None,
    corrupted: PromptBatch | Tensor,
    metric: Metric,
    component: Component | str = PatchConfig.component,  # `tvlens patch`'s defaults, written once
    positions: Positions | str = PatchConfig.positions,
    *,
    head_act: HeadAct | str = PatchConfig.head_act,
    layers: list[int] | None = None,
    source: Literal["clean", "mean", "zero"] | str | Mapping[str, Tensor] = "clean",
    method: Literal["exact", "attribution"] | str = PatchConfig.method,
    max_batch: int = MAX_BATCH,
    progress: bool = True,
) -> PatchResult:
    """Patch every ``component`` at every layer (and position, head) into ``corrupted``.

    Args:
        clean / corrupted: prompts (``PromptBatch``, or token ids without padding) of equal
            shape; ``clean`` may be None with ``source="zero"`` or an explicit mapping.
        metric: logits ``[batch, pos, d_vocab]`` → scalar (e.g. :class:`LogitDiff`).
        component: ``resid`` (entering each block), ``attn`` / ``mlp`` (block outputs),
            ``heads`` (per-head ``hook_z``, or ``q``/``k``/``v`` via ``head_act``; key/value
            heads follow the model's grouped-query layout).
        positions: ``all`` (every position at once), ``each`` (one position at a time) or
            ``last`` (the last position only; left padding).
        source: ``clean`` activations, their ``mean`` over prompts (per position; at the
            last position for ``last``), ``zero``, or ``{hook name: activation}``
            broadcastable to the activation (e.g. function-vector head means).
        method: ``exact`` (patched forward passes) or ``attribution`` (first-order estimate
            from two forward and one backward pass, :mod:`tvlens.patching.attribution`).
        max_batch: at most this many rows (prompts × copies) per forward pass.
        progress: a progress bar over the forward passes (``tqdm.auto``: a widget in
            notebooks); ``False`` to silence.

    Returns:
        :class:`PatchResult` with ``values`` of shape ``[layer]`` (resid/attn/mlp, all or
        last), ``[layer, pos]`` (each), ``[layer, head]`` or ``[layer, pos, head]`` (heads).
    """

    _check_max_batch(max_batch)
    if method == "attribution":
        return attribution_patch(
            model, clean, corrupted, metric, component, positions,
            head_act=head_act, layers=layers, source=source,
        )  # fmt: skip
    if method != "exact":
        raise ValueError(f"method must be 'exact' or 'attribution', got {method!r}.")
    corr, cln, layers, hooks = prepare(
        model, clean, corrupted, component, positions, head_act, layers
    )
    B, T = corr.tokens.shape
    last_only = bool(getattr(metric, "last_only", False))
    run = _corrupted(model, corr, component, positions, head_act, layers, hooks, last_only)
    src, clean_logits = source_acts(model, source, cln, run.acts, hooks, positions, last_only)
    n_heads = {layer: run.acts[h].shape[2] for layer, h in zip(layers, hooks, strict=True)}
    values = _empty_values(component, positions, len(layers), T, n_heads)

    # Positions before a copy's first patched one are taken from the corrupted run's cache when
    # it can be cut there exactly (adapter.cut_cache), else recomputed.
    cuts: dict[int, bool] = {}

    def cut_ok(p: int) -> bool:
        if p not in cuts:
            cuts[p] = run.kv is not None and adapter.can_cut(run.kv, p)
        return cuts[p]

    jobs = plan_jobs(model, component, positions, layers, T, n_heads, head_act, cut_ok,
                     run.skip_blocks)  # fmt: skip
    # Copies of the last token laid along the positions of one row (resume_packed).
    pack = positions == "last" and can_pack(model, T) and all(j.start == T - 1 for j in jobs)
    per_pass = max(1, max_batch // B)
    groups = list(group_jobs(jobs, per_pass, merge_layers=positions == "last"))
    for group in tqdm(groups, desc=f"patch {component}", disable=not progress, leave=False):
        logits = _patched_logits(model, run, group, src, component, pack)
        for c, job in enumerate(group):
            values[job.out] = metric_value(metric, _full_logits(run, logits[c], group[0].start))

    info = {
        "n_prompts": B,
        "n_pos": T,
        "forward_passes": len(groups),
        "max_batch": max_batch,
        # Which shortcuts this model and input allowed (see the comments in _corrupted).
        "fast_paths": {
            "skip_blocks": run.skip_blocks,
            "skip_attention": run.skip_attn,
            "cached_prefix": run.need_cache and all(j.start == (j.pos or 0) for j in jobs),
            "packed": pack,
        },
    }
    corrupted_metric = metric_value(metric, run.logits)
    return make_result(model, "exact", values, component, positions, head_act, source, layers,
                       metric, corrupted_metric, clean_logits, corr.tokens[0], info)  # fmt: skip


def _check_max_batch(max_batch: object) -> None:
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(
            f"max_batch must be an integer >= 1 (rows per forward pass), got {max_batch!r}: "
            "leave it at 1024, or lower it to save memory."
        )


@dataclass
class _CorruptedRun:
    """The corrupted run every patched copy resumes from, and the shortcuts it allows."""

    tokens: Tensor
    attention_mask: Tensor
    logits: Tensor
    acts: dict[str, Tensor]
    kv: Any
    skip_blocks: bool  # copies resume at their layer (else from block 0)
    skip_attn: bool  # a patched block's attention output is known (attn_shortcut)
    need_cache: bool
    last_only: bool  # the metric reads the last position only


def _corrupted(model: TVModel, corr: Tokens, component: str, positions: str,
               head_act: str, layers: list[int], hooks: list[str],
               last_only: bool) -> _CorruptedRun:  # fmt: skip
    """One corrupted forward pass, caching what the copies read: the residual entering each
    patched layer, the patched activations, and (for positions other than ``all``) the KV
    cache."""
    skip_ok = can_skip_blocks(model)
    resid_hooks = [model.resid_hook(layer if skip_ok else 0, "pre") for layer in layers]
    need_cache = positions != "all"
    # Attention need not run again in a patched block when the value it would return is known
    # (attn_shortcut; with the final-MLP trim below: all-position head sweep of the default
    # model 1.9x faster than TransformerLens's, was 1.3x; bench/patching.py).
    skip_attn = may_skip_attention(model, component, positions, head_act, layers)
    attn_hooks = [model.attn_module_hook(layer) for layer in layers] if skip_attn else []
    corr_logits, corr_acts, kv = corrupted_run(
        model,
        corr.tokens,
        corr.attention_mask,
        sorted(set(resid_hooks + hooks + attn_hooks)),
        need_cache,
        last_only,
    )
    if skip_attn and component == "heads":
        skip_attn = all(
            linear_heads(model, la, corr_acts[h], corr_acts[model.attn_module_hook(la)])
            for la, h in zip(layers, hooks, strict=True)
        )
    return _CorruptedRun(corr.tokens, corr.attention_mask, corr_logits, corr_acts, kv, skip_ok,
                         skip_attn, need_cache, last_only)  # fmt: skip


def _empty_values(component: str, positions: str, n_layers: int, T: int,
                  n_heads: dict[int, int]) -> Tensor:  # fmt: skip
    """The result's values, to be filled: ``[layer]``, ``[layer, pos]``, ``[layer, head]`` or
    ``[layer, pos, head]``."""
    dims = result_dims(component, positions)
    sizes = {"layer": n_layers, "pos": T}
    if component == "heads":
        if len(set(n_heads.values())) != 1:
            raise ValueError("Layers differ in their number of heads; patch them one by one.")
        sizes["head"] = next(iter(n_heads.values()))
    return torch.empty([sizes[d] for d in dims])


def _patched_logits(model: TVModel, run: _CorruptedRun, group: list[Job],
                    src: dict[str, Tensor], component: str,
                    pack: bool) -> Float[Tensor, "copies batch pos d_vocab"]:  # fmt: skip
    """One forward pass of a group of patched copies (same layer and first position), resumed
    from the corrupted run: the logits of each copy."""
    T = run.tokens.shape[1]
    layer, start, C = min(j.at for j in group), group[0].start, len(group)
    resid = run.acts[model.resid_hook(layer, "pre")][:, start:]
    layout = "b (c t)" if pack else "(b c) t"
    hooks_used = sorted({j.hook for j in group})
    fwd_hooks = [(h, writer(group, h, src[h], start, T, C, layout)) for h in hooks_used]
    fixed: contextlib.AbstractContextManager = contextlib.nullcontext()
    if run.skip_attn:
        value = patched_attention(model, group, run.acts, src, start, T, component)
        fixed, fwd_hooks = fixed_attention(model, group[0].layer, value), []
    # With a last-position metric, the final MLP need not run at other positions (unless
    # the patch itself sits on that MLP's output).
    trim = (
        last_position_mlp(model)
        if run.last_only and not pack and component != "mlp"
        else contextlib.nullcontext()
    )
    with fixed, trim, model.bridge.hooks(fwd_hooks=fwd_hooks):
        if pack:  # one token per copy: copies along the positions, prefix cache shared
            resid = einops.repeat(resid, "b 1 d -> b c d", c=C)
            prefix = cache_prefix(run.kv, T - 1)  # a fresh view: HF extends the cache it gets
            logits = resume_packed(model, resid, layer, run.attention_mask, prefix)
        else:
            resid = einops.repeat(resid, "b t d -> (b c) t d", c=C)
            mask = run.attention_mask.repeat_interleave(C, dim=0)
            past = cache_prefix(run.kv, start, C) if start else None
            logits = resume(model, resid, layer, mask, past, run.last_only)
    return einops.rearrange(logits, f"{layout} v -> c b t v", c=C)


def _full_logits(run: _CorruptedRun, lg: Tensor, start: int) -> Tensor:
    """A copy's logits as the metric reads them: the last position only, or every position
    (those before ``start`` from the corrupted run, which the copy did not recompute)."""
    if run.last_only:
        return lg[:, -1:]
    if start:
        return torch.cat([run.logits[:, :start], lg], dim=1)
    return lg
