"""Applies what a steering method writes (an :class:`Intervention` of :class:`Write` s,
defined in :mod:`tvlens.extraction.writes`, where extraction methods make them) with
:func:`apply_intervention`, one context manager over the bridge's ``hooks`` (removed on exit
and on error).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from tvlens.extraction.writes import (
    OPS,
    POINTS,
    Intervention,
    InterventionError,
    Op,
    Point,
    Write,
)
from tvlens.models.tvmodel import TVModel

__all__ = [
    "OPS",
    "POINTS",
    "Intervention",
    "InterventionError",
    "Op",
    "Point",
    "Write",
    "apply_intervention",
    "check_intervention",
    "hook_name",
    "stack_rows",
    "write_hook",
]


def hook_name(model: TVModel, point: str, layer: int) -> str:
    if point.startswith("resid_"):
        return model.resid_hook(layer, point.removeprefix("resid_"))  # type: ignore[arg-type]
    if point == "attn_out":
        return model.attn_out_hook(layer)
    if point == "mlp_out":
        return model.mlp_out_hook(layer)
    raise InterventionError(
        f"point must be resid_pre/resid_mid/resid_post/attn_out/mlp_out, got {point!r}."
    )


def write_hook(write: Write) -> Any:
    """The hook function of one write."""

    def hook(act: Tensor, hook: Any = None) -> Tensor:
        v = write.vector.to(act.device, act.dtype)
        if v.ndim == 2 and v.shape[0] != act.shape[0]:
            raise InterventionError(
                f"the vector has {v.shape[0]} rows (one per prompt) but the batch has "
                f"{act.shape[0]} prompts: pass one row per prompt, or a [d_model] vector."
            )
        if write.positions == "all":
            idx: tuple = (slice(None), slice(None))
            v = v[:, None] if v.ndim == 2 else v
        else:
            idx = (slice(None), -1)
        act = act.clone()
        h = act[idx]
        if write.op == "replace":
            new = v.expand_as(h)
        elif write.op == "add":
            new = h + write.scale * v
        elif write.op == "mix":
            new = write.keep * h + write.scale * v
        else:  # add_keep_norm
            shifted = h + write.scale * v
            new = shifted * (h.norm(dim=-1, keepdim=True) / shifted.norm(dim=-1, keepdim=True))
        act[idx] = new
        return act

    return hook


def check_intervention(model: TVModel, intervention: Intervention) -> list[tuple[str, Any]]:
    """The hooks of ``intervention`` on ``model``, checked: layers in range, points the model
    has, vectors of its ``d_model``."""
    hooks = []
    for w in intervention.writes:
        if w.vector.shape[-1] != model.d_model:
            raise InterventionError(
                f"a write at layer {w.layer} has size {w.vector.shape[-1]} but {model.name} has "
                f"d_model={model.d_model}."
            )
        hooks.append((hook_name(model, w.point, w.layer), write_hook(w)))
    return hooks


@contextmanager
def apply_intervention(
    model: TVModel, intervention: Intervention | Sequence[Write]
) -> Iterator[TVModel]:
    """Apply every write of ``intervention`` while the block runs; the hooks are removed on
    exit, also when the block raises.

    Example::

        with apply_intervention(model, Intervention((Write(2, v, op="add", scale=4.0),))):
            logits = model(batch.tokens, attention_mask=batch.attention_mask)
    """
    if not isinstance(intervention, Intervention):
        intervention = Intervention(tuple(intervention))
    hooks = check_intervention(model, intervention)
    with model.bridge.hooks(fwd_hooks=hooks):
        yield model


def stack_rows(vectors: Sequence[Tensor]) -> Tensor:
    """``[n, d_model]`` from ``n`` vectors (a helper for methods that write per layer)."""
    return torch.stack([v.detach() for v in vectors])
