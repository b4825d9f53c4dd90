"""Resume a forward pass from block ``k`` on cached activations, computing only what a patch
at layer ``k`` (from position ``p`` on) can change.

TransformerBridge's ``start_at_layer`` swaps a residual into block ``k`` but still runs blocks
``0..k-1`` (measured: 10.3 ms vs 10.4 ms for a full pass on the default model). Here those
blocks are swapped for an identity for the duration of the call, so the pass really starts at
block ``k`` (default model, 32 prompts x 23 tokens: 10.2, 7.5, 5.1, 2.9 ms from blocks 0-3).
HF still builds masks, positions and rotary embeddings, and every hook of blocks ``>= k``
fires, so hook-based patches and TransformerLens hooks work as in a full pass.

Positions before ``p`` cannot change either (causal attention): their keys/values come from
the corrupted run's HF cache, cut at ``p``, and only positions ``p..`` are recomputed.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.utilities import get_offset_position_ids


class _Identity(nn.Module):
    """Stands in for a skipped HF block: returns its hidden states unchanged."""

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return hidden_states


def bridge_of(model: Any) -> Any:
    return getattr(model, "bridge", model)


@contextlib.contextmanager
def skipped_blocks(model: Any, n: int) -> Iterator[None]:
    """Blocks ``0..n-1`` do nothing inside the context (restored on exit, also on errors)."""
    blocks = bridge_of(model).blocks
    saved = [blocks[i]._modules["_original_component"] for i in range(n)]
    try:
        for i in range(n):
            blocks[i]._modules["_original_component"] = _Identity()
        yield
    finally:
        for i, module in enumerate(saved):
            blocks[i]._modules["_original_component"] = module


class _Constant(nn.Module):
    """Stands in for a block's attention: returns a precomputed output."""

    def __init__(self, value: Tensor):
        super().__init__()
        self.value = value

    def forward(self, *args: Any, **kwargs: Any) -> tuple[Tensor, None]:
        return self.value, None


def attention_slot(model: Any, layer: int) -> tuple[nn.Module, str] | None:
    """The HF block of ``layer`` and the name under which it calls its attention, or None for
    a block layout tvlens does not know (then attention is recomputed, never skipped)."""
    block = bridge_of(model).blocks[layer]
    hf_block = block._modules.get("_original_component")
    attn = getattr(block, "attn", None)
    if hf_block is None or attn is None:
        return None
    names = [n for n, mod in hf_block.named_children() if mod is attn]
    return (hf_block, names[0]) if len(names) == 1 else None


@contextlib.contextmanager
def fixed_attention(
    model: Any, layer: int, value: Float[Tensor, "batch pos d_model"]
) -> Iterator[None]:
    """Block ``layer``'s attention returns ``value`` (its output, bias included) instead of
    being computed: HF blocks (GPT-2, Llama, NeoX) call ``out, _ = self.attn(...)`` and add
    ``out`` to the residual, so only the rest of the block runs."""
    slot = attention_slot(model, layer)
    if slot is None:
        raise ValueError(f"Block {layer}'s attention cannot be replaced on this model.")
    hf_block, name = slot
    saved = hf_block._modules[name]
    try:
        hf_block._modules[name] = _Constant(value)
        yield
    finally:
        hf_block._modules[name] = saved


class _LastPositionOnly(nn.Module):
    """Runs a position-wise module (an MLP) on the last position only; zeros elsewhere."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out = torch.zeros_like(x)
        out[:, -1:] = self.module(x[:, -1:], *args, **kwargs)
        return out


@contextlib.contextmanager
def last_position_mlp(model: Any) -> Iterator[bool]:
    """The final block's MLP runs on the last position only (yields whether it could be
    swapped). Only the last position's logits are read then (``logits_to_keep=1``), and the
    final MLP is position-wise, so its other positions are wasted work: the MLP took about
    two thirds of a block's time on the default model."""
    bridge = bridge_of(model)
    block = bridge.blocks[len(bridge.blocks) - 1]
    hf_block = block._modules.get("_original_component")
    mlp = getattr(block, "mlp", None)
    names = [] if hf_block is None else [n for n, m in hf_block.named_children() if m is mlp]
    if len(names) != 1:
        yield False
        return
    saved = hf_block._modules[names[0]]
    try:
        hf_block._modules[names[0]] = _LastPositionOnly(saved)
        yield True
    finally:
        hf_block._modules[names[0]] = saved


def cache_prefix(cache: Any, p: int, copies: int = 1) -> Any:
    """The HF cache cut to its first ``p`` positions, each row repeated ``copies`` times
    (rows of a copy adjacent), as a new object: ``cache`` itself is left as it was."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in out.layers:
        keys, values = layer.keys[..., :p, :], layer.values[..., :p, :]
        if copies > 1:
            keys = keys.repeat_interleave(copies, dim=0)
            values = values.repeat_interleave(copies, dim=0)
        layer.keys, layer.values = keys, values
    return out


def resume(
    model: Any,
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
    bridge = bridge_of(model)
    n_past = attention_mask.shape[1] - resid.shape[1]
    if n_past and (past is None or past.get_seq_length() != n_past):
        have = None if past is None else past.get_seq_length()
        raise ValueError(f"resume needs a cache of {n_past} positions, got {have}.")
    kwargs: dict[str, Any] = {"past_key_values": past} if n_past else {}
    if last_only:
        kwargs["logits_to_keep"] = 1
    mask = padding_mask(attention_mask)
    positions = None if mask is None else mask_positions(bridge, mask)
    if positions is not None:
        kwargs["position_ids"] = positions[:, n_past:]
    with skipped_blocks(bridge, layer):
        return bridge(resid, start_at_layer=layer, attention_mask=mask, **kwargs)


def can_pack(model: Any) -> bool:
    """Whether the model's attention takes a custom 4D additive mask (eager and SDPA do;
    flash attention does not)."""
    hf = getattr(bridge_of(model), "original_model", None)
    impl = getattr(getattr(hf, "config", None), "_attn_implementation", None)
    return impl in ("eager", "sdpa")


def resume_packed(
    model: Any,
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
    about 90 MB per sweep on the default model and took most of its time.
    """
    bridge = bridge_of(model)
    T = attention_mask.shape[1]
    if past.get_seq_length() != T - 1:
        raise ValueError(f"resume_packed needs a cache of {T - 1} positions.")
    mask, positions = packed_mask(bridge, attention_mask, resid.shape[1], resid.dtype)
    with skipped_blocks(bridge, layer):
        return bridge(
            resid,
            start_at_layer=layer,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
        )


def packed_mask(
    bridge: Any, attention_mask: Int[Tensor, "batch pos"], copies: int, dtype: torch.dtype
) -> tuple[Float[Tensor, "batch 1 copies _"], Int[Tensor, "batch copies"]]:
    """Additive 4D mask and position ids for ``copies`` copies of the last token laid along
    the positions after a cached prefix of ``pos - 1`` tokens: each copy sees the prefix (its
    unpadded part) and itself, at the last token's position."""
    B, T = attention_mask.shape
    device = attention_mask.device
    positions = mask_positions(bridge, attention_mask)
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
    bridge: Any, attention_mask: Int[Tensor, "batch pos"]
) -> Int[Tensor, "batch pos"] | None:
    """The position ids the bridge derives from a padded mask for token input (it derives
    none for a residual input, so a resumed pass must pass them: without them rotary models
    were off by 6e-4 under left padding)."""
    if not bridge._accepts_derived_position_ids():
        return None
    mask = attention_mask.long()
    derived = get_offset_position_ids(0, mask)
    arange = torch.arange(mask.shape[1], device=mask.device).expand_as(derived)
    # Rows without a pad before a real token keep arange, as the bridge does.
    needs = ((derived != arange) & (mask != 0)).any(dim=1, keepdim=True)
    return torch.where(needs, derived, arange)


@torch.no_grad()
def corrupted_run(
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"],
    hook_names: list[str],
    keep_cache: bool = True,
    last_only: bool = False,
) -> tuple[Float[Tensor, "batch _ d_vocab"], dict[str, Tensor], Any]:
    """One full pass: logits (of the last position only with ``last_only``), the activations
    at ``hook_names`` and the HF KV cache."""
    bridge = bridge_of(model)
    acts: dict[str, Tensor] = {}

    def keeper(name: str):  # keyed by the name asked for: hook.name may be a canonical alias
        def keep(act: Tensor, hook: Any) -> None:
            acts[name] = act.detach().clone()

        return keep

    mask = padding_mask(attention_mask)
    kw: dict[str, Any] = {"logits_to_keep": 1} if last_only else {}
    # Only the last position is read after the final MLP (unless a hook sits there).
    L = len(bridge.blocks) - 1
    after_mlp = (f"blocks.{L}.hook_mlp_out", f"blocks.{L}.hook_resid_post")
    trim = (
        last_position_mlp(bridge)
        if last_only and not any(n in after_mlp or ".mlp." in n for n in hook_names)
        else contextlib.nullcontext()
    )
    with trim, bridge.hooks(fwd_hooks=[(n, keeper(n)) for n in hook_names]):
        if keep_cache:
            logits, cache = bridge(
                tokens, attention_mask=mask, return_type="logits_and_cache", **kw
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
