"""Gemma-2: a norm after attention and after the MLP (post-norm), and a sliding window on
every other layer, from the first (default: the context length)."""

from __future__ import annotations

from tvlens.models.families.base import ModelFamily, Sizes


def hf_config(s: Sizes):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(
        head_dim=s.d_head,
        query_pre_attn_scalar=s.d_head,
        sliding_window=s.sliding_window or s.n_ctx,
        **s.grouped(),
    )
    return cfg, Gemma2ForCausalLM


FAMILY = ModelFamily("gemma2", "gemma2", hf_config, post_norm=True, sliding_window=True)
