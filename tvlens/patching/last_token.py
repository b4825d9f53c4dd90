"""Patches at the last position only, at a fraction of a forward pass each.

A patch at the last token cannot change anything at earlier positions, so the prefix (every
token but the last) is run once and its keys/values kept (the HF cache the bridge returns with
``return_type="logits_and_cache"``). Each patched copy then recomputes the last token alone,
with many copies laid along the batch. This is what function-vector AIE (one copy per head)
and task-vector layer sweeps (one copy per layer) need.

Requires left padding (the last column is every row's query) and a model with an HF KV cache
(every HF model tvlens loads: all of them are loaded through ``boot_transformers``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvlens.errors import PromptError
from tvlens.models import adapter
from tvlens.models.resume import cache_prefix, can_pack, corrupted_run, packed_mask
from tvlens.models.tvmodel import TVModel
from tvlens.runs.config import MAX_BATCH
from tvlens.tasks.prompts import PromptBatch

# A patch receives the hooked activation of the last token viewed as [batch, copies, ...]
# (copies of each prompt side by side) and returns it (modified in place or new).
CopyPatch = Callable[[Tensor], Tensor]


@dataclass
class PrefixState:
    """The keys/values of every token but the last, for one left-padded batch."""

    cache: Any
    last_tokens: Int[Tensor, "batch 1"]
    attention_mask: Int[Tensor, "batch pos"]

    @property
    def batch_size(self) -> int:
        return self.last_tokens.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return adapter.cache_dtype(self.cache)


def _require_left_padded(batch: PromptBatch) -> None:
    if batch.include_answer:
        raise PromptError("Last-token patching needs prompts without appended answers.")
    last = batch.tokens.shape[1] - 1
    if not bool((batch.query_pos == last).all()):
        raise PromptError(
            "Last-token patching needs every query at the last column: tokenize with "
            "padding_side='left'."
        )


@torch.no_grad()
def run_prefix(model: TVModel, batch: PromptBatch) -> PrefixState:
    """Run all tokens but the last once and keep their KV cache."""
    _require_left_padded(batch)
    if batch.tokens.shape[1] < 2:
        raise PromptError("Prompts need at least two tokens (a prefix and a last token).")
    tokens, mask = batch.tokens[:, :-1], batch.attention_mask[:, :-1]
    _, _, cache = corrupted_run(model, tokens, mask, [], keep_cache=True)  # checks the cache
    return PrefixState(cache, batch.tokens[:, -1:], batch.attention_mask)


@torch.no_grad()
def last_token_logits(
    model: TVModel,
    state: PrefixState,
    copies: int = 1,
    patches: Sequence[tuple[str, CopyPatch]] = (),
) -> Float[Tensor, "batch copies d_vocab"]:
    """Logits at the last position for ``copies`` copies of each prompt, with ``patches``
    (hook name, function on ``[batch, copies, 1, ...]``) applied to the last token.

    The copies sit side by side along the positions of one row, each attending to the shared
    prefix cache and to itself (:func:`tvlens.models.resume.packed_mask`), so the prefix's
    keys/values are not repeated per copy; where that does not hold exactly
    (:func:`tvlens.models.resume.can_pack`: flash attention, or a sliding window shorter than
    the prompt) the cache is repeated along the batch instead.
    """
    bridge = model.bridge
    b = state.batch_size
    T = state.attention_mask.shape[1]
    pack = can_pack(model, T)
    layout = "b c" if pack else "(b c)"

    def wrap(fn: CopyPatch) -> Callable:
        def hook(act: Tensor, hook: Any) -> Tensor:
            view = einops.rearrange(act, f"{layout} ... -> b c 1 ...", b=b, c=copies)
            out = fn(view)
            return einops.rearrange(out, f"b c 1 ... -> {layout} ...")

        return hook

    with bridge.hooks(fwd_hooks=[(name, wrap(fn)) for name, fn in patches]):
        if pack:
            cache = cache_prefix(state.cache, T - 1)
            mask, positions = packed_mask(model, state.attention_mask, copies, state.dtype)
            tokens = state.last_tokens.expand(b, copies)
            logits = bridge(
                tokens, attention_mask=mask, position_ids=positions, past_key_values=cache
            )
            return logits
        cache = cache_prefix(state.cache, T - 1, copies)
        tokens = state.last_tokens.repeat_interleave(copies, dim=0)
        mask = state.attention_mask.repeat_interleave(copies, dim=0)
        logits = bridge(tokens, attention_mask=mask, past_key_values=cache)
    return einops.rearrange(logits[:, -1], "(b c) v -> b c v", b=b, c=copies)


# Writes components ``idx`` (all on one hook) into copies ``cs`` of the last-token
# activation viewed as ``[batch, copies, 1, ...]``, and returns it.
ComponentWrite = Callable[[Tensor, Tensor, list[int]], Tensor]


@torch.no_grad()
def sweep_components(
    model: TVModel,
    state: PrefixState,
    hook_names: Sequence[str],
    write: ComponentWrite,
    max_batch: int = MAX_BATCH,
) -> Float[Tensor, "batch n d_vocab"]:
    """Last-token logits with one patched copy per component ``i`` (hooked at
    ``hook_names[i]``), many copies per pass: ``max_batch`` bounds prompts × copies."""
    out = []
    for part in chunks(len(hook_names), max_batch // state.batch_size):
        by_hook: dict[str, tuple[list[int], list[int]]] = {}
        for c, i in enumerate(part):
            copies, idx = by_hook.setdefault(hook_names[i], ([], []))
            copies.append(c)
            idx.append(i)

        def patch_for(copies: list[int], idx: list[int]) -> CopyPatch:
            cs = torch.tensor(copies)
            return lambda act: write(act, cs, idx)

        patches = [(name, patch_for(c, i)) for name, (c, i) in by_hook.items()]
        out.append(last_token_logits(model, state, copies=len(part), patches=patches))
    return torch.cat(out, dim=1)


def chunks(n: int, size: int) -> Iterator[range]:
    """``range(n)`` in consecutive pieces of at most ``size``."""
    size = max(int(size), 1)
    for start in range(0, n, size):
        yield range(start, min(start + size, n))
