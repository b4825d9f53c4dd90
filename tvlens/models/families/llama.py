"""Llama: rotary positions, grouped-query attention, gated MLP."""

from __future__ import annotations

from tvlens.models.families.base import ModelFamily, Sizes


def hf_config(s: Sizes):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=s.d_model,
        intermediate_size=s.d_mlp,
        num_hidden_layers=s.n_layers,
        num_attention_heads=s.n_heads,
        num_key_value_heads=s.n_kv_heads,
        max_position_embeddings=s.n_ctx,
        tie_word_embeddings=False,
        **s.common,
    )
    return cfg, LlamaForCausalLM


FAMILY = ModelFamily("llama", "llama", hf_config)
