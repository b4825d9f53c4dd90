"""Slow, obviously correct references for tests and bench: one full forward pass per patched
component.

What TransformerLens's ``patching`` module does for head patching, written for the last-token
patches of function vectors and layer sweeps. Tests check the fast paths against these, and
``bench/`` times the fast paths against them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from tvlens.injection.inject import Mode, inject
from tvlens.models.tvmodel import TVModel
from tvlens.tasks.prompts import PromptBatch


@torch.no_grad()
def reference_head_aie(
    model: TVModel, corrupted: PromptBatch, head_means: Float[Tensor, "layer head d_head"]
) -> Float[Tensor, "layer head"]:
    """AIE by one full forward pass per head with its last-token ``hook_z`` set to its mean
    (``corrupted`` left-padded)."""
    rows = torch.arange(len(corrupted), device=corrupted.tokens.device)

    def p_answer() -> Tensor:
        logits = model(corrupted.tokens, attention_mask=corrupted.attention_mask)
        return torch.softmax(logits[:, -1].float(), -1)[rows, corrupted.answer_first]

    base = p_answer()
    aie = torch.zeros(model.n_layers, model.n_heads)
    for layer in range(model.n_layers):
        for head in range(model.n_heads):

            def fn(z: Tensor, hook: object, layer: int = layer, head: int = head) -> Tensor:
                z = z.clone()
                z[:, -1, head] = head_means[layer, head].to(z.dtype)
                return z

            with model.hooks(fwd_hooks=[(model.z_hook(layer), fn)]):
                aie[layer, head] = (p_answer() - base).mean().cpu()
    return aie


@torch.no_grad()
def reference_layer_sweep(
    model: TVModel,
    batch: PromptBatch,
    vectors: Float[Tensor, "n d_model"],
    layers: Sequence[int],
    mode: Mode = "replace",
    scale: float = 1.0,
) -> Float[Tensor, "batch n d_vocab"]:
    """Last-token logits with ``vectors[i]`` injected after block ``layers[i]``, one full forward
    pass per layer (``batch`` left-padded)."""
    out = []
    for v, layer in zip(vectors, layers, strict=True):
        with inject(model, v, layer=layer, mode=mode, scale=scale):
            out.append(model(batch.tokens, attention_mask=batch.attention_mask)[:, -1])
    return torch.stack(out, dim=1)


def attn_out_proj(hf: torch.nn.Module, layer: int) -> torch.nn.Module:
    """A plain HF model's attention output projection at ``layer`` (GPT-2's ``c_proj``, the
    others' ``o_proj``): where the official state-vector and LTV code hook the heads."""
    if hasattr(hf, "transformer"):
        return hf.transformer.h[layer].attn.c_proj
    return hf.model.layers[layer].self_attn.o_proj
