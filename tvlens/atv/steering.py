"""Add per-row, per-layer vectors to the outputs of a frozen target's blocks.

ATV adds ``λ · v_l`` to the output of block ``l`` (the residual stream after it,
``blocks.{l}.hook_resid_post``). The official code adds at every position; the paper's text
says the last token: both are offered (``positions="all"`` or ``"last"``, or one position per
row). Pads are never written: under ``"all"`` only real tokens (attention mask 1) get the
vector, under ``"last"`` each row's last real token, so left and right padding give the same
result. The addition is an ordinary differentiable tensor op, so gradients reach the
generator that produced the vectors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvlens.atv.generator import last_real_position
from tvlens.errors import TVLensError
from tvlens.models.tvmodel import TVModel

Positions = Literal["all", "last"]


def steering_weights(
    attention_mask: Int[Tensor, "batch pos"],
    positions: Positions | Int[Tensor, " batch"] = "all",
) -> Float[Tensor, "batch pos"]:
    """1 where the vector is added, 0 elsewhere (pads are always 0)."""
    mask = attention_mask.float()
    if isinstance(positions, str):
        if positions == "all":
            return mask
        if positions != "last":
            raise TVLensError(f"positions must be 'all' or 'last', got {positions!r}.")
        positions = last_real_position(attention_mask)
    if positions.shape != (attention_mask.shape[0],):
        raise TVLensError(
            f"positions has shape {tuple(positions.shape)}, expected one index per row "
            f"({attention_mask.shape[0]},)."
        )
    onehot = torch.zeros_like(mask)
    onehot[torch.arange(mask.shape[0], device=mask.device), positions.to(mask.device)] = 1.0
    return onehot * mask


def _add_hook(
    vector: Float[Tensor, "batch d_model"], weights: Float[Tensor, "batch pos"], scale: float
):
    def hook(act: Tensor, hook=None) -> Tensor:
        if act.shape[0] != vector.shape[0] or act.shape[1] != weights.shape[1]:
            raise TVLensError(
                f"Steering vectors were made for a batch of {vector.shape[0]} rows and "
                f"{weights.shape[1]} positions, but the target ran on "
                f"{tuple(act.shape[:2])}: steer the same tokens the vectors were made for."
            )
        w = weights.to(act.device, act.dtype)[..., None]
        return act + scale * w * vector.to(act.device, act.dtype)[:, None, :]

    return hook


@contextmanager
def steer(
    target: TVModel,
    vectors: Float[Tensor, "batch n_layers d_model"],
    layers: Sequence[int],
    attention_mask: Int[Tensor, "batch pos"],
    positions: Positions | Int[Tensor, " batch"] = "all",
    scale: float = 1e-3,
) -> Iterator[TVModel]:
    """While the block runs, every forward of ``target`` on the batch ``attention_mask``
    describes gets ``scale * vectors[:, i]`` added after block ``layers[i]``.

    One hook per layer, all removed on exit, also when the block raises. Example::

        with steer(target, generator(gen_tokens, gen_mask), range(target.n_layers), mask):
            logits = target(tokens, attention_mask=mask)
    """
    layers = [target.check_layer(layer) for layer in layers]
    if len(set(layers)) != len(layers):
        raise TVLensError(f"Steering layers repeat: {layers}.")
    if vectors.shape[1:] != (len(layers), target.d_model):
        raise TVLensError(
            f"Steering vectors have shape {tuple(vectors.shape)}; {target.name} needs "
            f"[batch, {len(layers)} layers, d_model={target.d_model}]."
        )
    weights = steering_weights(attention_mask, positions)
    hooks = [
        (target.resid_hook(layer, "post"), _add_hook(vectors[:, i], weights, scale))
        for i, layer in enumerate(layers)
    ]
    with target.bridge.hooks(fwd_hooks=hooks):
        yield target
