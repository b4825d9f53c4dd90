"""Gemma-3: q/k norms, norms before and after attention and MLP (post-norm), and local layers
(a sliding window) between global ones: every other layer here."""

from __future__ import annotations

from tvlens.models.families.base import ModelFamily, Sizes


def hf_config(s: Sizes):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        head_dim=s.d_head,
        query_pre_attn_scalar=s.d_head,
        sliding_window=s.sliding_window or s.n_ctx,
        layer_types=[("sliding_attention" if i % 2 == 0 else "full_attention")
                     for i in range(s.n_layers)],
        **s.grouped(),
    )  # fmt: skip
    return cfg, Gemma3ForCausalLM


FAMILY = ModelFamily("gemma3", "gemma3_text", hf_config, post_norm=True, sliding_window=True)
