"""Activation patching: residual stream, attention output, MLP output and attention heads, from a
clean run (or a mean / zero ablation) into a corrupted run, one metric value per component.

Each patched copy recomputes only what its patch can change (:mod:`tvlens.patching.resume`):

- a patch at layer ``l`` resumes from the corrupted run's residual entering block ``l``, so
  blocks ``0..l-1`` are not run again;
- a patch from position ``p`` on leaves positions ``< p`` untouched (causal attention), so
  their keys/values come from the corrupted run's KV cache and only positions ``p..`` run;
  ``positions="last"`` (function-vector AIE, task-vector sweeps) recomputes one token;
- copies that resume at the same layer and position share one forward pass, laid along the
  batch (prompt-major), at most ``max_batch`` rows at a time.

Each of these shortcuts is taken only where its assumption holds for the loaded model (checked;
``PatchResult.info["fast_paths"]`` says which were taken), else the copy is recomputed: see
:mod:`tvlens.patching.resume` and the comments in :func:`patch`.

TransformerLens's ``patching`` functions run one full forward pass per component; the results
here equal theirs (tests, 1e-5 in float32) at a fraction of the work (``bench/patching.py``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import einops
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tvlens.errors import LayerError, PromptError
from tvlens.models import adapter
from tvlens.models.loading import TVModel
from tvlens.patching.metrics import Metric, metric_name
from tvlens.patching.resume import (
    attention_slot,
    attn_out_is_slot_output,
    cache_prefix,
    can_pack,
    can_skip_blocks,
    corrupted_run,
    fixed_attention,
    last_position_mlp,
    resume,
    resume_packed,
)
from tvlens.tasks.prompts import PromptBatch

Component = Literal["resid", "attn", "mlp", "heads"]
Positions = Literal["all", "each", "last"]
HeadAct = Literal["z", "q", "k", "v"]
COMPONENTS: tuple[str, ...] = ("resid", "attn", "mlp", "heads")
POSITIONS: tuple[str, ...] = ("all", "each", "last")
HEAD_ACTS: tuple[str, ...] = ("z", "q", "k", "v")


# ---------------------------------------------------------------------------- inputs
@dataclass
class Tokens:
    """Token ids and attention mask of one side of a patching experiment."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]

    @classmethod
    def of(cls, x: PromptBatch | Tensor, device: torch.device) -> Tokens:
        if isinstance(x, PromptBatch):
            if x.include_answer:
                raise PromptError(
                    "Patch prompts without their answers (tokenize with include_answer=False): "
                    "the metric reads the prediction at the query."
                )
            return cls(x.tokens.to(device), x.attention_mask.to(device))
        if not isinstance(x, Tensor) or x.ndim != 2 or x.is_floating_point():
            raise PromptError(
                "Give prompts as a PromptBatch (tvlens.tasks.tokenize_prompts) or token ids "
                f"[batch, pos]; got {type(x).__name__} {getattr(x, 'shape', '')}."
            )
        return cls(x.to(device), torch.ones_like(x, device=device))


def component_hook(model: TVModel, component: str, layer: int, head_act: str = "z") -> str:
    """The hook a component is patched at."""
    if component == "resid":
        return model.resid_hook(layer, "pre")
    if component == "attn":
        return model.attn_out_hook(layer)
    if component == "mlp":
        return model.mlp_out_hook(layer)
    if component == "heads":
        return model.head_hook(layer, head_act)
    raise ValueError(f"component must be one of {COMPONENTS}, got {component!r}.")


# ---------------------------------------------------------------------------- results
@dataclass
class PatchResult:
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
        from tvlens.frames import patch_frame

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

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=True))
        return path


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
        clean_metric=float("nan") if clean_logits is None else _metric_value(metric, clean_logits),
        corrupted_metric=corrupted_metric,
        layers=layers,
        pos_labels=position_labels(model, tokens),
        head_act=head_act if component == "heads" else None,
        source=source if isinstance(source, str) else "given",
        model=model.spec.name,
        info=info,
    )


# ---------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class _Job:
    """One patched copy: resume at block ``at`` from position ``start``; write the source at
    ``hook`` (of block ``layer``) into positions ``pos`` (None: all from ``start`` on) of head
    ``head``."""

    out: tuple[int, ...]
    layer: int
    start: int
    hook: str
    pos: int | None = None
    head: int | None = None
    at: int = 0


def _jobs(
    model: TVModel,
    component: str,
    positions: str,
    layers: list[int],
    n_pos: int,
    n_heads: dict[int, int],
    head_act: str,
    cut_ok: Callable[[int], bool],
    skip_ok: bool,
) -> list[_Job]:
    """The patched copies; a copy resumes at its own layer only when earlier blocks may be
    skipped (``skip_ok``), and from its own position only when the corrupted run's cache can
    be cut there exactly (``cut_ok``); otherwise from block 0 / position 0."""
    jobs = []
    last = n_pos - 1
    for li, layer in enumerate(layers):
        hook = component_hook(model, component, layer, head_act)
        heads = range(n_heads[layer]) if component == "heads" else [None]
        at = layer if skip_ok else 0
        for h in heads:
            hi = () if h is None else (h,)
            if positions == "all":
                jobs.append(_Job((li, *hi), layer, 0, hook, None, h, at))
            elif positions == "last":
                start = last if cut_ok(last) else 0
                jobs.append(_Job((li, *hi), layer, start, hook, last, h, at))
            else:
                for p in range(n_pos):
                    start = p if p == 0 or cut_ok(p) else 0
                    jobs.append(_Job((li, p, *hi), layer, start, hook, p, h, at))
    return jobs


def _groups(jobs: list[_Job], per_pass: int, merge_layers: bool) -> Iterator[list[_Job]]:
    """Jobs that resume at the same position (and layer, unless ``merge_layers``), at most
    ``per_pass`` at a time. A merged group resumes at its lowest layer: a copy's blocks below
    its own patch recompute the corrupted values, a waste that is cheaper than one more pass
    when only one token is recomputed (default model, 16 heads at the last position: one pass
    of 16 copies ran in about half the time of four per-layer passes)."""
    by_key: dict[tuple[int, ...], list[_Job]] = {}
    for j in jobs:
        by_key.setdefault((j.start,) if merge_layers else (j.layer, j.at, j.start), []).append(j)
    for group in by_key.values():
        for i in range(0, len(group), per_pass):
            yield group[i : i + per_pass]


# ---------------------------------------------------------------------------- checks
def _check_layers(model: TVModel, layers: list[int] | None) -> list[int]:
    n = model.n_layers
    if layers is None:
        return list(range(n))
    out = []
    for layer in layers:
        if not isinstance(layer, int) or not -n <= layer < n:
            raise LayerError(f"Layer {layer!r} is out of range for a model with {n} layers.")
        out.append(layer % n)
    return sorted(set(out))


def _check_pair(clean: Tokens | None, corrupted: Tokens, positions: str) -> None:
    if clean is None:
        return
    if clean.tokens.shape != corrupted.tokens.shape:
        raise PromptError(
            f"Clean prompts {tuple(clean.tokens.shape)} and corrupted prompts "
            f"{tuple(corrupted.tokens.shape)} differ in shape: patching needs the same number "
            "of prompts and tokens (build the corrupted prompts from the clean ones, e.g. "
            "tvlens.tasks.shuffled_label_variants, with answers of one token)."
        )
    if positions != "last" and not torch.equal(clean.attention_mask, corrupted.attention_mask):
        raise PromptError(
            "Clean and corrupted prompts are padded differently, so position p is a different "
            "token in each: give prompts of equal token lengths row by row, or patch "
            "positions='last' with left padding."
        )


def _check_last(t: Tokens) -> None:
    if t.tokens.shape[1] < 2:
        raise PromptError("positions='last' needs prompts of at least two tokens.")
    if not bool(t.attention_mask[:, -1].all()):
        raise PromptError(
            "positions='last' patches the last column, which is padding in some rows: "
            "tokenize with padding_side='left'."
        )


def prepare(
    model: TVModel,
    clean: PromptBatch | Tensor | None,
    corrupted: PromptBatch | Tensor,
    component: str,
    positions: str,
    head_act: str,
    layers: list[int] | None,
) -> tuple[Tokens, Tokens | None, list[int], list[str]]:
    """Checked inputs of a patching call (exact or attribution): corrupted and clean tokens on
    the model's device, the layers, and the hook patched at each layer."""
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, got {component!r}.")
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}.")
    if head_act not in HEAD_ACTS:
        raise ValueError(f"head_act must be one of {HEAD_ACTS}, got {head_act!r}.")
    bridge = model.bridge
    device = model.device
    corr = Tokens.of(corrupted, device)
    cln = None if clean is None else Tokens.of(clean, device)
    _check_pair(cln, corr, positions)
    if positions == "last":
        _check_last(corr)
    layers = _check_layers(model, layers)
    hooks = [component_hook(model, component, layer, head_act) for layer in layers]
    for h in hooks:
        if h not in bridge.hook_dict:
            raise LayerError(f"This model has no hook {h!r} (component={component!r}).")
    return corr, cln, layers, hooks


# ---------------------------------------------------------------------------- sources
def _source_acts(
    model: TVModel,
    source: str | Mapping[str, Tensor],
    clean: Tokens | None,
    corrupted_acts: dict[str, Tensor],
    hooks: list[str],
    positions: str,
    last_only: bool = False,
) -> tuple[dict[str, Tensor], Float[Tensor, "batch _ d_vocab"] | None]:
    """Activations to write at each hook, broadcastable to the corrupted ones, and the clean
    logits when there is a clean run (one pass, also keeping the source activations when the
    source is the clean run or its mean)."""
    from_clean = isinstance(source, str) and source in ("clean", "mean")
    if isinstance(source, str) and source not in ("clean", "mean", "zero"):
        raise ValueError(f"source must be 'clean', 'mean', 'zero' or a mapping, got {source!r}.")
    if from_clean and clean is None:
        raise PromptError(f"source={source!r} needs clean prompts.")
    logits, acts = None, {}
    if clean is not None:
        logits, acts, _ = corrupted_run(
            model, clean.tokens, clean.attention_mask, hooks if from_clean else [],
            keep_cache=False, last_only=last_only,
        )  # fmt: skip
    if source == "mean":
        last = slice(-1, None) if positions == "last" else slice(None)
        acts = {h: a[:, last].mean(0, keepdim=True) for h, a in acts.items()}
    elif source == "zero":
        acts = {h: torch.zeros_like(corrupted_acts[h][:1, :1]) for h in hooks}
    elif isinstance(source, Mapping):
        acts = {h: _given_source(source, h, corrupted_acts[h]) for h in hooks}
    return acts, logits


def _given_source(source: Mapping[str, Tensor], hook: str, target: Tensor) -> Tensor:
    """``source[hook]`` with leading axes added until it broadcasts to ``target``."""
    if hook not in source:
        raise ValueError(f"source has no activation for hook {hook!r}.")
    s = torch.as_tensor(source[hook]).to(target.device, target.dtype)
    while s.ndim < target.ndim:
        s = s[None]
    try:
        torch.broadcast_shapes(s.shape, target.shape)
    except RuntimeError:
        raise ValueError(
            f"source[{hook!r}] has shape {tuple(source[hook].shape)}, which does not "
            f"broadcast to the activation {tuple(target.shape)}."
        ) from None
    return s


def _at_positions(s: Tensor, start: int, n_pos: int) -> Tensor:
    """A source activation from position ``start`` on (length-1 position axes broadcast)."""
    return s[:, start:] if s.shape[1] == n_pos else s


# ---------------------------------------------------------------------------- main
def _metric_value(metric: Metric, logits: Tensor) -> float:
    value = metric(logits)
    if not isinstance(value, Tensor) or value.numel() != 1:
        raise ValueError(
            f"The metric must return a scalar tensor, got {type(value).__name__} "
            f"{tuple(getattr(value, 'shape', ()))}: average over prompts inside the metric."
        )
    return float(value)


@torch.no_grad()
def patch(
    model: TVModel,
    clean: PromptBatch | Tensor | None,
    corrupted: PromptBatch | Tensor,
    metric: Metric,
    component: Component | str = "heads",
    positions: Positions | str = "all",
    *,
    head_act: HeadAct | str = "z",
    layers: list[int] | None = None,
    source: Literal["clean", "mean", "zero"] | str | Mapping[str, Tensor] = "clean",
    method: Literal["exact", "attribution"] | str = "exact",
    max_batch: int = 1024,
    progress: bool = False,
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

    Returns:
        :class:`PatchResult` with ``values`` of shape ``[layer]`` (resid/attn/mlp, all or
        last), ``[layer, pos]`` (each), ``[layer, head]`` or ``[layer, pos, head]`` (heads).
    """
    if method == "attribution":
        from tvlens.patching.attribution import attribution_patch

        return attribution_patch(
            model, clean, corrupted, metric, component, positions,
            head_act=head_act, layers=layers, source=source,
        )  # fmt: skip
    if method != "exact":
        raise ValueError(f"method must be 'exact' or 'attribution', got {method!r}.")
    corr, cln, layers, hooks = prepare(
        model, clean, corrupted, component, positions, head_act, layers
    )
    bridge = model.bridge
    B, T = corr.tokens.shape
    skip_ok = can_skip_blocks(model)
    resid_hooks = [model.resid_hook(layer if skip_ok else 0, "pre") for layer in layers]
    need_cache = positions != "all"
    # Attention need not run again in a patched block when the value it would return is known:
    # the attention module's output is ``z @ W_O + b_O``, linear in the heads' ``z``, so a head
    # patch adds ``(z_source - z) @ W_O`` to the corrupted output, and an ``attn`` patch writes
    # the source itself. The value replaces the module's output, *before* any norm the block
    # applies to it (Gemma-2, OLMo-2), so the block's norm still runs on it. Checked per layer:
    # the module is in a known slot; for ``attn``, ``hook_attn_out`` reports that module's
    # output (not on post-norm blocks); for heads, the captured module output equals
    # ``z @ W_O + b_O`` (_linear_heads). (With the final-MLP trim below: all-position head sweep
    # of the default model 1.9x faster than TransformerLens's, was 1.3x; bench/patching.py.)
    skip_attn = (
        positions != "last"  # last-position groups mix layers
        and (component == "attn" or (component == "heads" and head_act == "z"))
        and all(attention_slot(model, layer) is not None for layer in layers)
        and (component != "attn" or all(attn_out_is_slot_output(model, la) for la in layers))
    )
    attn_hooks = [model.attn_module_hook(layer) for layer in layers] if skip_attn else []
    last_only = bool(getattr(metric, "last_only", False))
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
            _linear_heads(model, la, corr_acts[h], corr_acts[model.attn_module_hook(la)])
            for la, h in zip(layers, hooks, strict=True)
        )
    src, clean_logits = _source_acts(model, source, cln, corr_acts, hooks, positions, last_only)

    n_heads = {layer: corr_acts[h].shape[2] for layer, h in zip(layers, hooks, strict=True)}
    dims = result_dims(component, positions)
    sizes = {"layer": len(layers), "pos": T}
    if component == "heads":
        if len(set(n_heads.values())) != 1:
            raise ValueError("Layers differ in their number of heads; patch them one by one.")
        sizes["head"] = next(iter(n_heads.values()))
    values = torch.empty([sizes[d] for d in dims])

    # Positions before a copy's first patched one are taken from the corrupted run's cache when
    # it can be cut there exactly (adapter.cut_cache), else recomputed.
    cuts: dict[int, bool] = {}

    def cut_ok(p: int) -> bool:
        if p not in cuts:
            cuts[p] = kv is not None and adapter.can_cut(kv, p)
        return cuts[p]

    jobs = _jobs(model, component, positions, layers, T, n_heads, head_act, cut_ok, skip_ok)
    # Copies of the last token laid along the positions of one row (resume_packed).
    pack = positions == "last" and can_pack(model, T) and all(j.start == T - 1 for j in jobs)
    per_pass = max(1, max_batch // B)
    groups = list(_groups(jobs, per_pass, merge_layers=positions == "last"))
    for group in tqdm(groups, desc=f"patch {component}", disable=not progress, leave=False):
        layer, start, C = min(j.at for j in group), group[0].start, len(group)
        resid = corr_acts[model.resid_hook(layer, "pre")][:, start:]
        layout = "b (c t)" if pack else "(b c) t"
        hooks_used = sorted({j.hook for j in group})
        fwd_hooks = [(h, _writer(group, h, src[h], start, T, C, layout)) for h in hooks_used]
        fixed: contextlib.AbstractContextManager = contextlib.nullcontext()
        if skip_attn:
            value = _patched_attention(model, group, corr_acts, src, start, T, component)
            fixed, fwd_hooks = fixed_attention(model, group[0].layer, value), []
        # With a last-position metric, the final MLP need not run at other positions (unless
        # the patch itself sits on that MLP's output).
        trim = (
            last_position_mlp(model)
            if last_only and not pack and component != "mlp"
            else contextlib.nullcontext()
        )
        with fixed, trim, bridge.hooks(fwd_hooks=fwd_hooks):
            if pack:  # one token per copy: copies along the positions, prefix cache shared
                resid = einops.repeat(resid, "b 1 d -> b c d", c=C)
                prefix = cache_prefix(kv, T - 1)  # a fresh view: HF extends the cache it gets
                logits = resume_packed(model, resid, layer, corr.attention_mask, prefix)
            else:
                resid = einops.repeat(resid, "b t d -> (b c) t d", c=C)
                mask = corr.attention_mask.repeat_interleave(C, dim=0)
                past = cache_prefix(kv, start, C) if start else None
                logits = resume(model, resid, layer, mask, past, last_only)
        logits = einops.rearrange(logits, f"{layout} v -> c b t v", c=C)
        for c, job in enumerate(group):
            lg = logits[c]
            if last_only:
                lg = lg[:, -1:]
            elif start:
                lg = torch.cat([corr_logits[:, :start], lg], dim=1)
            values[job.out] = _metric_value(metric, lg)

    info = {
        "n_prompts": B,
        "n_pos": T,
        "forward_passes": len(groups),
        "max_batch": max_batch,
        # Which shortcuts this model and input allowed (see the comments above).
        "fast_paths": {
            "skip_blocks": skip_ok,
            "skip_attention": skip_attn,
            "cached_prefix": need_cache and all(j.start == (j.pos or 0) for j in jobs),
            "packed": pack,
        },
    }
    corrupted_metric = _metric_value(metric, corr_logits)
    return make_result(model, "exact", values, component, positions, head_act, source, layers,
                       metric, corrupted_metric, clean_logits, corr.tokens[0], info)  # fmt: skip


def _linear_heads(
    model: TVModel,
    layer: int,
    z: Float[Tensor, "batch pos n_heads d_head"],
    out: Float[Tensor, "batch pos d_model"],
) -> bool:
    """Whether the attention module's output ``out`` is ``z @ W_O + b_O`` (so that a head patch
    changes it by ``(z_source - z) @ W_O``), to rounding."""
    W_O, b_O = model.W_O(layer).detach().float(), model.b_O(layer).detach().float()
    pred = einops.einsum(z.float(), W_O, "b t h dh, h dh d -> b t d") + b_O
    tol = 1e-4 if out.dtype in (torch.float32, torch.float64) else 2e-2
    scale = float(out.float().abs().max().clamp_min(1e-6))
    return float((pred - out.float()).abs().max()) <= tol * scale


def _patched_attention(
    model: TVModel,
    group: list[_Job],
    corr_acts: dict[str, Tensor],
    src: dict[str, Tensor],
    start: int,
    n_pos: int,
    component: str,
) -> Float[Tensor, "batch_copies new_pos d_model"]:
    """Block ``layer``'s attention module output for each copy of ``group`` (all at one layer):
    the corrupted output with the patch applied (``attn``: replaced at the patched positions;
    ``heads``: plus ``(z_source - z_corrupted) @ W_O`` of the patched head)."""
    layer, C = group[0].layer, len(group)
    base = corr_acts[model.attn_module_hook(layer)][:, start:]
    value = einops.repeat(base, "b t d -> b c t d", c=C).clone()
    hook = group[0].hook
    s = _at_positions(src[hook], start, n_pos)
    if component == "heads":
        W_O = model.W_O(layer).to(value.dtype)
        z = corr_acts[hook][:, start:]
    for c, j in enumerate(group):
        t = slice(None) if j.pos is None else slice(j.pos - start, j.pos - start + 1)
        s_t = s if s.shape[1] == 1 else s[:, t]
        if component == "attn":
            value[:, c, t] = s_t
        else:
            diff = s_t[:, :, j.head] - z[:, t, j.head]
            value[:, c, t] += diff.to(value.dtype) @ W_O[j.head]
    return einops.rearrange(value, "b c t d -> (b c) t d")


def _writer(
    group: list[_Job], hook: str, src: Tensor, start: int, n_pos: int, copies: int, layout: str
):
    """Hook writing each copy's source activation into that copy (copies along the batch,
    ``layout="(b c) t"``, or along the positions, ``"b (c t)"``)."""
    mine = [(c, j) for c, j in enumerate(group) if j.hook == hook]
    s = _at_positions(src, start, n_pos)

    def fn(act: Tensor, hook: Any) -> Tensor:
        act = einops.rearrange(act, f"{layout} ... -> b c t ...", c=copies).clone()
        for c, j in mine:
            t = slice(None) if j.pos is None else slice(j.pos - start, j.pos - start + 1)
            src_t = s if s.shape[1] == 1 else s[:, t]
            if j.head is None:
                act[:, c, t] = src_t
            else:
                act[:, c, t, j.head] = src_t[:, :, j.head]
        return einops.rearrange(act, f"b c t ... -> {layout} ...")

    return fn


def position_labels(model: TVModel, tokens: Int[Tensor, " pos"]) -> list[str]:
    """``"i tok"`` for each position of one prompt (readable axis labels)."""
    tok = model.tokenizer
    ids = tokens.tolist()
    words = tok.convert_ids_to_tokens(ids) if tok is not None else [str(i) for i in ids]
    # Escape whitespace tokens (a bare newline makes an empty tick label).
    return [f"{i} {w.encode('unicode_escape').decode() or '∅'}" for i, w in enumerate(words)]
