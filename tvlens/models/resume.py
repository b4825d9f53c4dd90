"""Run a model from block ``k`` on cached activations (:func:`run_from`), computing only
what a patch at layer ``k`` (from position ``p`` on) can change: a model capability, used by
:mod:`tvlens.patching` and by anything else that starts a pass mid-model.

TransformerBridge's ``start_at_layer`` swaps a residual into block ``k`` but still runs blocks
``0..k-1`` (measured: 10.3 ms vs 10.4 ms for a full pass on the default model). Here those
blocks are swapped for an identity for the duration of the call, so the pass really starts at
block ``k`` (default model, 32 prompts x 23 tokens: 10.2, 7.5, 5.1, 2.9 ms from blocks 0-3).
HF still builds masks, positions and rotary embeddings, and every hook of blocks ``>= k``
fires, so hook-based patches and TransformerLens hooks work as in a full pass.

Positions before ``p`` cannot change either (causal attention): their keys/values come from
the corrupted run's HF cache, cut at ``p``, and only positions ``p..`` are recomputed. The cut
is exact for every cache layer class of transformers 5.23 that holds plain keys/values
(:func:`tvlens.models.adapter.cut_cache`); where none exists the caller recomputes from 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from tvlens.models import adapter
from tvlens.models.tvmodel import TVModel

# Every fast path below states the assumption it rests on and the check that decides whether it
# is taken; where the check fails the general path (a full recomputation) runs instead. Tests
# compare every path with TransformerLens and plain HF on pre-norm, post-norm (Gemma-2, OLMo-2)
# and sliding-window (Gemma-2, Mistral) models.


class _Identity(nn.Module):
    """Stands in for a skipped HF block: returns its hidden states unchanged."""

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return hidden_states


# Config fields of architectures whose blocks pass something besides the residual stream to
# later blocks (Gemma-3n: per-layer inputs, AltUp streams, keys/values shared across layers).
_CROSS_LAYER_FIELDS = ("num_kv_shared_layers", "hidden_size_per_layer_input", "altup_num_inputs")


def can_skip_blocks(model: TVModel) -> bool:
    """Whether blocks ``0..k-1`` may be skipped when block ``k`` gets their residual output.

    Assumption: a block reads nothing from earlier blocks but the residual stream (masks,
    positions and rotary embeddings come from the model's inputs). Checked from the config
    (architectures that share state across layers are refused) and by tests that resume every
    test architecture from every layer and compare with a full pass.
    """
    cfg = adapter.hf_config(model.bridge)
    return not any(getattr(cfg, f, None) for f in _CROSS_LAYER_FIELDS)


@contextlib.contextmanager
def skipped_blocks(model: TVModel, n: int) -> Iterator[None]:
    """Blocks ``0..n-1`` do nothing inside the context (restored on exit, also on errors)."""
    blocks = model.bridge.blocks
    with adapter.swapped_hf_modules([blocks[i] for i in range(n)], _Identity):
        yield


class _Constant(nn.Module):
    """Stands in for a block's attention: returns a precomputed output."""

    def __init__(self, value: Tensor):
        super().__init__()
        self.value = value

    def forward(self, *args: Any, **kwargs: Any) -> tuple[Tensor, None]:
        return self.value, None


def attention_slot(model: TVModel, layer: int) -> tuple[nn.Module, str] | None:
    """The HF block of ``layer`` and the name under which it calls its attention, or None for
    a block layout tvlens does not know (then attention is recomputed, never skipped)."""
    block = model.bridge.blocks[layer]
    hf_block = adapter.hf_module(block)
    attn = getattr(block, "attn", None)
    if hf_block is None or attn is None:
        return None
    name = adapter.child_name(hf_block, attn)
    return None if name is None else (hf_block, name)


def attn_out_is_slot_output(model: TVModel, layer: int) -> bool:
    """Whether ``hook_attn_out`` of ``layer`` reports what the block's attention returns.

    Not on blocks that normalise the attention output before the residual stream (Gemma-2/3,
    OLMo-2: ``hook_attn_out`` fires after that norm) or scale it (Granite): there, writing a
    ``hook_attn_out`` value in place of the attention would pass it through the norm twice.
    """
    target = adapter.block_hook_target(model.bridge.blocks[layer], "hook_attn_out")
    return target == "attn.hook_out"


@contextlib.contextmanager
def fixed_attention(
    model: TVModel, layer: int, value: Float[Tensor, "batch pos d_model"]
) -> Iterator[None]:
    """Block ``layer``'s attention returns ``value`` (its output, bias included, before any norm
    the block applies to it) instead of being computed: HF blocks call ``out, _ =
    self.attn(...)`` and go on with ``out``, so only the rest of the block runs."""
    slot = attention_slot(model, layer)
    if slot is None:
        raise ValueError(f"Block {layer}'s attention cannot be replaced on this model.")
    with adapter.swapped(*slot, _Constant(value)):
        yield


class _LastPositionOnly(nn.Module):
    """Runs a position-wise module (an MLP) on the last position only; zeros elsewhere."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out = torch.zeros_like(x)
        out[:, -1:] = self.module(x[:, -1:], *args, **kwargs)
        return out


# Config fields of mixture-of-experts MLPs: routing with a capacity (Switch) makes a token's
# output depend on the other tokens, so an MoE MLP is never trimmed.
_MOE_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


@contextlib.contextmanager
def last_position_mlp(model: TVModel) -> Iterator[bool]:
    """The final block's MLP runs on the last position only (yields whether it could be
    swapped). Only the last position's logits are read then (``logits_to_keep=1``), and the
    final MLP is position-wise, so its other positions are wasted work: the MLP took about
    two thirds of a block's time on the default model.

    Assumption: the final MLP is position-wise and nothing after it mixes positions (true of a
    dense MLP followed by a norm and the unembedding). Checked: MoE configs are refused; tests
    compare trimmed and full last-position logits on every test architecture.
    """
    bridge = model.bridge
    cfg = adapter.hf_config(bridge)
    block = bridge.blocks[len(bridge.blocks) - 1]
    hf_block = adapter.hf_module(block)
    mlp = getattr(block, "mlp", None)
    name = None if hf_block is None or mlp is None else adapter.child_name(hf_block, mlp)
    if name is None or any(getattr(cfg, f, None) for f in _MOE_FIELDS):
        yield False
        return
    with adapter.swapped(hf_block, name, _LastPositionOnly(hf_block._modules[name])):
        yield True


def cache_prefix(cache: Any, p: int, copies: int = 1) -> Any:
    """The HF cache cut to its first ``p`` positions, each row repeated ``copies`` times, as a
    new object (:func:`tvlens.models.adapter.cut_cache`; raises
    :class:`~tvlens.models.adapter.CacheCutError` where no exact cut exists)."""
    return adapter.cut_cache(cache, p, copies)


def resume(
    model: TVModel,
    resid: Float[Tensor, "batch new_pos d_model"],
    layer: int,
    attention_mask: Int[Tensor, "batch pos"],
    past: Any = None,
    last_only: bool = False,
) -> Float[Tensor, "batch _ d_vocab"]:
    """Logits of a pass that starts with ``resid`` entering block ``layer``.

    ``resid`` holds the last ``new_pos`` positions; ``past`` (an HF cache of the first
    ``pos - new_pos`` positions, e.g. from :func:`cache_prefix`) holds the rest, or is None
    when ``new_pos == pos``. Hooks active on the model fire for blocks ``>= layer``.
    ``last_only``: unembed the last position only (HF's ``logits_to_keep``; the unembedding
    of every position dominates a pass of a large-vocabulary model).
    """
    bridge = model.bridge
    n_past = attention_mask.shape[1] - resid.shape[1]
    if n_past and (past is None or past.get_seq_length() != n_past):
        have = None if past is None else past.get_seq_length()
        raise ValueError(f"resume needs a cache of {n_past} positions, got {have}.")
    kwargs: dict[str, Any] = {"past_key_values": past} if n_past else {}
    if last_only:
        kwargs["logits_to_keep"] = 1
    mask = padding_mask(attention_mask)
    positions = None if mask is None else mask_positions(model, mask)
    if positions is not None:
        kwargs["position_ids"] = positions[:, n_past:]
    # Blocks before ``layer`` are skipped only where that is exact (:func:`can_skip_blocks`);
    # elsewhere they run, and the bridge swaps ``resid`` in at ``layer`` as TransformerLens does.
    skip = skipped_blocks(model, layer) if can_skip_blocks(model) else contextlib.nullcontext()
    with skip:
        return bridge(resid, start_at_layer=layer, attention_mask=mask, **kwargs)


def run_from(
    model: TVModel,
    layer: int,
    resid: Float[Tensor, "batch new_pos d_model"],
    attention_mask: Int[Tensor, "batch pos"],
    past: Any = None,
    last_only: bool = False,
) -> Float[Tensor, "batch _ d_vocab"]:
    """Logits of ``model``'s pass that starts with ``resid`` entering block ``layer``: blocks
    before it are skipped, not run, where that is exact for this model (:func:`can_skip_blocks`;
    else they run and the residual is swapped in at ``layer``, as TransformerLens's
    ``start_at_layer``); ``past``: an HF cache of the positions before ``resid``'s
    (:func:`cache_prefix`). The public name of :func:`resume`."""
    return resume(model, resid, layer, attention_mask, past, last_only)


def can_pack(model: TVModel, n_pos: int | None = None) -> bool:
    """Whether copies of the last token may be laid along the positions after one shared
    prefix, with a custom 4D mask (:func:`packed_mask`), for prompts of ``n_pos`` positions.

    Assumptions, each checked: the attention takes a custom 4D additive mask (eager and SDPA
    do; flash attention does not); one 4D mask serves every layer, which holds only while no
    layer's sliding window or attention chunk is shorter than the prompt (the window is then
    not in the mask: refused when ``n_pos`` exceeds it, or when ``n_pos`` is unknown); the
    model reads positions from ``position_ids`` only (ALiBi reads the 2D mask: refused).
    """
    bridge = model.bridge
    if adapter.attn_implementation(bridge) not in ("eager", "sdpa"):
        return False
    cfg = adapter.hf_config(bridge)
    if getattr(cfg, "alibi", False) or getattr(cfg, "use_alibi", False):
        return False
    if getattr(cfg, "model_type", None) in ("bloom", "mpt"):  # ALiBi without a config flag
        return False
    span = adapter.attention_span(bridge)
    return span is None or (n_pos is not None and n_pos <= span)


def resume_packed(
    model: TVModel,
    resid: Float[Tensor, "batch copies d_model"],
    layer: int,
    attention_mask: Int[Tensor, "batch pos"],
    past: Any,
) -> Float[Tensor, "batch copies d_vocab"]:
    """Logits of ``copies`` variants of each prompt's last token, entering block ``layer``,
    laid along the *positions* of one row rather than along the batch.

    Every copy attends to the prompt's prefix (``past``: ``pos - 1`` positions, not repeated)
    and to itself, and sits at the last token's position: a 4D attention mask and explicit
    position ids make each copy see exactly what the last token sees in a full pass. Repeating
    the prefix's keys/values for every copy instead (``cache_prefix(..., copies)``) copied
    about 90 MB per sweep on the default model and took most of its time. Only where
    :func:`can_pack` holds.
    """
    T = attention_mask.shape[1]
    if past.get_seq_length() != T - 1:
        raise ValueError(f"resume_packed needs a cache of {T - 1} positions.")
    if not can_pack(model, T):
        raise ValueError("This model cannot take packed copies (see can_pack).")
    mask, positions = packed_mask(model, attention_mask, resid.shape[1], resid.dtype)
    with skipped_blocks(model, layer):
        return model.bridge(
            resid,
            start_at_layer=layer,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
        )


def packed_mask(
    model: TVModel, attention_mask: Int[Tensor, "batch pos"], copies: int, dtype: torch.dtype
) -> tuple[Float[Tensor, "batch 1 copies _"], Int[Tensor, "batch copies"]]:
    """Additive 4D mask and position ids for ``copies`` copies of the last token laid along
    the positions after a cached prefix of ``pos - 1`` tokens: each copy sees the prefix (its
    unpadded part) and itself, at the last token's position."""
    B, T = attention_mask.shape
    device = attention_mask.device
    positions = mask_positions(model, attention_mask)
    last = positions[:, -1:] if positions is not None else torch.full((B, 1), T - 1)
    allowed = torch.zeros(B, 1, copies, T - 1 + copies, dtype=torch.bool, device=device)
    allowed[:, 0, :, : T - 1] = attention_mask[:, None, : T - 1].bool()
    allowed[:, 0, torch.arange(copies), T - 1 + torch.arange(copies)] = True
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask, last.to(device).expand(B, copies)


def padding_mask(
    attention_mask: Int[Tensor, "batch pos"],
) -> Int[Tensor, "batch pos"] | None:
    """The mask, or None when nothing is padded: HF then takes its plain causal path
    (measured: a forward pass with an all-ones mask cost 1.6x one without, 26 vs 17 ms)."""
    return None if bool(attention_mask.all()) else attention_mask


def mask_positions(
    model: TVModel, attention_mask: Int[Tensor, "batch pos"]
) -> Int[Tensor, "batch pos"] | None:
    """The position ids the bridge derives from a padded mask for token input (it derives
    none for a residual input, so a resumed pass must pass them: without them rotary models
    were off by 6e-4 under left padding)."""
    if not adapter.accepts_derived_position_ids(model.bridge):
        return None
    mask = attention_mask.long()
    derived = adapter.offset_position_ids(mask)
    arange = torch.arange(mask.shape[1], device=mask.device).expand_as(derived)
    # Rows without a pad before a real token keep arange, as the bridge does.
    needs = ((derived != arange) & (mask != 0)).any(dim=1, keepdim=True)
    return torch.where(needs, derived, arange)


@torch.no_grad()
def corrupted_run(
    model: TVModel,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"],
    hook_names: list[str],
    keep_cache: bool = True,
    last_only: bool = False,
) -> tuple[Float[Tensor, "batch _ d_vocab"], dict[str, Tensor], Any]:
    """One full pass: logits (of the last position only with ``last_only``), the activations
    at ``hook_names`` and the HF KV cache.

    The cache keeps every position on every layer (:func:`tvlens.models.adapter.full_cache`):
    a sliding-window layer's own cache drops old positions and keeps counting them, so it
    could not be cut at an earlier position.
    """
    bridge = model.bridge
    acts: dict[str, Tensor] = {}
    mask = padding_mask(attention_mask)
    kw: dict[str, Any] = {"logits_to_keep": 1} if last_only else {}
    # Only the last position is read after the final MLP (unless a hook sits there).
    L = model.n_layers - 1
    after_mlp = (model.mlp_out_hook(L), model.resid_hook(L, "post"))
    trim = (
        last_position_mlp(model)
        if last_only and not any(n in after_mlp or ".mlp." in n for n in hook_names)
        else contextlib.nullcontext()
    )
    with trim, bridge.hooks(fwd_hooks=adapter.keepers(acts, hook_names)):
        if keep_cache:
            logits, cache = bridge(
                tokens,
                attention_mask=mask,
                return_type="logits_and_cache",
                past_key_values=adapter.full_cache(),
                **kw,
            )
        else:
            logits, cache = bridge(tokens, attention_mask=mask, **kw), None
    if keep_cache and (cache is None or cache.get_seq_length() != tokens.shape[1]):
        # An empty cache would let resumed passes run without their prefix: a wrong number,
        # not an error (transformers 5.24 behind TransformerLens 4.3; pyproject pins <5.24).
        raise RuntimeError(
            "The model returned no usable KV cache (a native TransformerBridge model, or "
            "transformers>=5.24): patching needs an HF model behind the bridge and "
            "transformers<5.24."
        )
    return logits, acts, cache
