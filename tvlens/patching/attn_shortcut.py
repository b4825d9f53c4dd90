"""The attention shortcut of exact patching: in a block whose attention output is patched (or
one of whose heads' ``z`` is), the attention module need not run again, because the value it
would return is known.

The attention module's output is ``z @ W_O + b_O``, linear in the heads' ``z``, so a head patch
adds ``(z_source - z) @ W_O`` to the corrupted output, and an ``attn`` patch writes the source
itself. The value replaces the module's output, *before* any norm the block applies to it
(Gemma-2, OLMo-2), so the block's norm still runs on it. Checked per layer: the module is in a
known slot; for ``attn``, ``hook_attn_out`` reports that module's output (not on post-norm
blocks); for heads, the captured module output equals ``z @ W_O + b_O`` (:func:`linear_heads`).
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from tvlens.models.resume import attention_slot, attn_out_is_slot_output
from tvlens.models.tvmodel import TVModel
from tvlens.patching.copies import Job, at_positions


def may_skip_attention(model: TVModel, component: str, positions: str, head_act: str,
                       layers: list[int]) -> bool:  # fmt: skip
    """Whether the shortcut may be taken before the corrupted run is seen (for heads,
    :func:`linear_heads` must then also hold on that run)."""
    return (
        positions != "last"  # last-position groups mix layers
        and (component == "attn" or (component == "heads" and head_act == "z"))
        and all(attention_slot(model, layer) is not None for layer in layers)
        and (component != "attn" or all(attn_out_is_slot_output(model, la) for la in layers))
    )


def linear_heads(
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


def patched_attention(
    model: TVModel,
    group: list[Job],
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
    s = at_positions(src[hook], start, n_pos)
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
