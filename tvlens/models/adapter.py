"""Every place where tvlens reaches into TransformerLens's or transformers' private internals.

tvlens's fast paths (patching that recomputes only what a patch can change, last-token sweeps on
a cached prefix) need a few things neither library exposes: the HF module a bridge component
wraps, the bridge's head reshaping and position-id rule, and the layers of an HF KV cache. They
are all here, so that an upgrade that changes one of them breaks one module, and
``tests/models/test_adapter.py`` says which (``pyproject.toml`` pins the versions they were
written against: transformer-lens 4.3, transformers <5.24).

Also here: the one hook helper that keeps activations (:func:`keeper`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

# ---------------------------------------------------------------------------- hooks


def keeper(
    store: dict[str, Tensor],
    name: str,
    select: Callable[[Tensor], Tensor] | None = None,
    *,
    grad: bool = False,
) -> Callable[[Tensor, Any], Tensor | None]:
    """A forward hook that keeps its activation in ``store[name]``.

    Keyed by the name asked for: ``hook.name`` may be a canonical alias (``resid_post`` is an
    alias of the block's output hook on the bridge). ``select`` picks part of the activation
    (e.g. the query rows) before it is copied. ``grad=True`` keeps the activation itself as a
    leaf of the autograd graph (attribution patching) and returns it, so the rest of the pass
    depends on it; otherwise a detached copy is kept and the activation is left alone.
    """

    def keep(act: Tensor, hook: Any) -> Tensor | None:
        if grad:
            # With frozen weights nothing upstream needs a gradient: start the graph here.
            if not act.requires_grad:
                act = act.detach().requires_grad_(True)
            store[name] = act
            return act
        store[name] = (act if select is None else select(act)).detach().clone()
        return None

    return keep


def keepers(
    store: dict[str, Tensor],
    names: list[str],
    select: Callable[[Tensor], Tensor] | None = None,
    *,
    grad: bool = False,
) -> list[tuple[str, Callable]]:
    """``fwd_hooks`` keeping every hook in ``names`` (see :func:`keeper`)."""
    return [(n, keeper(store, n, select, grad=grad)) for n in names]


# ---------------------------------------------------------------------------- TransformerBridge

# A bridge component (block, attention, MLP) keeps the HF module it wraps under this name.
_ORIGINAL = "_original_component"


def hf_module(component: nn.Module) -> nn.Module | None:
    """The HF module a bridge component wraps (None when it wraps none)."""
    return component._modules.get(_ORIGINAL)


def child_name(parent: nn.Module, child: nn.Module) -> str | None:
    """The one name under which ``parent`` holds ``child`` (None: not a child, or several)."""
    names = [n for n, m in parent.named_children() if m is child]
    return names[0] if len(names) == 1 else None


@contextlib.contextmanager
def swapped(parent: nn.Module, name: str, module: nn.Module) -> Iterator[None]:
    """``parent``'s child ``name`` is ``module`` inside the context (restored on exit, also on
    errors). Writes ``_modules`` directly: ``setattr`` on a bridge component would re-register
    hooks and aliases."""
    saved = parent._modules[name]
    try:
        parent._modules[name] = module
        yield
    finally:
        parent._modules[name] = saved


@contextlib.contextmanager
def swapped_hf_modules(
    components: list[nn.Module], make: Callable[[], nn.Module]
) -> Iterator[None]:
    """Each bridge component in ``components`` wraps ``make()`` instead of its HF module inside
    the context (restored on exit, also on errors)."""
    with contextlib.ExitStack() as stack:
        for c in components:
            stack.enter_context(swapped(c, _ORIGINAL, make()))
        yield


def reshape_o(bridge: Any, W_O: Tensor) -> Tensor:
    """The attention output matrix split by head, ``[n_heads, d_head, d_model]``."""
    return bridge._reshape_o(W_O)


def accepts_derived_position_ids(bridge: Any) -> bool:
    """Whether the bridge derives position ids from a padded attention mask for this model."""
    return bool(bridge._accepts_derived_position_ids())


def offset_position_ids(attention_mask: Tensor) -> Tensor:
    """The position ids the bridge derives from a padded mask (left padding shifts them)."""
    from transformer_lens.utilities import get_offset_position_ids

    return get_offset_position_ids(0, attention_mask)


def block_hook_target(block: nn.Module, alias: str) -> str | None:
    """What a block-level hook alias points to (``hook_attn_out`` is ``attn.hook_out`` on a
    pre-norm block, ``ln1_post.hook_out`` after a norm on the attention output), or None."""
    return getattr(block, "hook_aliases", {}).get(alias)


def hf_config(bridge: Any) -> Any:
    """The config of the HF model behind the bridge (its text part), or None."""
    cfg = getattr(getattr(bridge, "original_model", None), "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config(decoder=True)
    return cfg


def attn_implementation(bridge: Any) -> str | None:
    """``eager``, ``sdpa``, ``flash_attention_2``... of the HF model behind the bridge."""
    cfg = getattr(getattr(bridge, "original_model", None), "config", None)
    return getattr(cfg, "_attn_implementation", None)


def attention_span(bridge: Any) -> int | None:
    """The fewest positions any layer attends back (its sliding window or attention chunk), or
    None when every layer sees the whole prefix."""
    cfg = hf_config(bridge)
    spans = [getattr(cfg, a, None) for a in ("sliding_window", "attention_chunk_size")]
    spans = [int(s) for s in spans if isinstance(s, int) and s > 0]
    return min(spans) if spans else None


# ---------------------------------------------------------------------------- HF KV cache


class CacheCutError(ValueError):
    """A cache that cannot be cut exactly at the asked position (its caller recomputes)."""


def full_cache() -> Any:
    """An empty HF cache whose layers keep every position (``DynamicLayer``), also on
    sliding-window layers: the window is applied by the attention mask, so a pass with this
    cache is exactly a pass with the model's own cache, and it can be cut anywhere."""
    from transformers import DynamicCache

    return DynamicCache()


def cache_layers(cache: Any) -> list[Any]:
    return list(cache.layers)


def cache_dtype(cache: Any) -> torch.dtype:
    return cache.layers[0].keys.dtype


def _cut_dynamic(layer: Any, p: int) -> tuple[Tensor, Tensor]:
    return layer.keys[..., :p, :], layer.values[..., :p, :]


def _cut_sliding(layer: Any, p: int) -> tuple[Tensor, Tensor]:
    """A sliding-window layer keeps the last ``window - 1`` positions it has seen and counts
    every position in ``cumulative_length``; a prefix of ``p`` positions needs positions
    ``max(p - window + 1, 0) .. p - 1``, which it still holds only if it has not dropped them."""
    seen, held = layer.cumulative_length, layer.keys.shape[-2]
    first_held, first_needed = seen - held, max(p - layer.sliding_window + 1, 0)
    if first_needed < first_held:
        raise CacheCutError(
            f"a sliding-window cache layer (window {layer.sliding_window}) of {seen} positions "
            f"has dropped positions before {first_held}; a cut at {p} needs them"
        )
    lo, hi = first_needed - first_held, p - first_held
    return layer.keys[..., lo:hi, :], layer.values[..., lo:hi, :]


def cut_cache(cache: Any, p: int, copies: int = 1) -> Any:
    """The HF cache cut to its first ``p`` positions, each row repeated ``copies`` times (rows of
    a copy adjacent), as a new object: ``cache`` itself is left as it was (HF extends the cache
    it is given).

    Exact for the layer classes of transformers 5.23 that hold plain keys/values:
    ``DynamicLayer``, ``DynamicSlidingWindowLayer`` (while it still holds the positions the cut
    needs) and ``DynamicIndexedLayer``. Any other layer (static and quantized layers, linear-
    attention states that cannot be rewound, KV-sharing dummies) raises
    :class:`CacheCutError`, and the caller recomputes instead.
    """
    from transformers.cache_utils import (
        DynamicIndexedLayer,
        DynamicLayer,
        DynamicSlidingWindowLayer,
    )

    seen = cache.get_seq_length()
    if not 0 < p <= seen:
        raise CacheCutError(f"cannot cut a cache of {seen} positions at {p}")
    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        kind = type(layer)  # exact classes: a subclass may hold more state than keys/values
        if kind not in (DynamicLayer, DynamicSlidingWindowLayer, DynamicIndexedLayer):
            raise CacheCutError(f"cache layers of type {kind.__name__} cannot be cut")
        if not layer.is_initialized or layer.keys is None:
            raise CacheCutError("a cache layer holds no keys/values (shared or unused)")
        new = copy.copy(layer)
        if kind is DynamicSlidingWindowLayer:
            keys, values = _cut_sliding(layer, p)
            new.cumulative_length = p
        else:
            keys, values = _cut_dynamic(layer, p)
        if copies > 1:
            keys = keys.repeat_interleave(copies, dim=0)
            values = values.repeat_interleave(copies, dim=0)
        new.keys, new.values = keys, values
        if kind is DynamicIndexedLayer:
            if new.indexer_keys is not None:
                new.indexer_keys = new.indexer_keys[:, :p].repeat_interleave(copies, dim=0)
            if new.indexer_position_ids is not None:
                ids = new.indexer_position_ids[..., :p]
                new.indexer_position_ids = ids.repeat_interleave(copies, dim=1)
        out.layers.append(new)
    return out


def can_cut(cache: Any, p: int) -> bool:
    """Whether :func:`cut_cache` can cut ``cache`` exactly at ``p``."""
    try:
        cut_cache(cache, p)
    except CacheCutError:
        return False
    return True
