"""GPT-NeoX (Pythia): partial rotary positions, fused q/k/v (``query_key_value``), parallel
attention and MLP."""

from __future__ import annotations

from tvlens.models.families.base import ModelFamily, Sizes


def hf_config(s: Sizes):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(
        hidden_size=s.d_model,
        intermediate_size=s.d_mlp,
        num_hidden_layers=s.n_layers,
        num_attention_heads=s.n_heads,
        max_position_embeddings=s.n_ctx,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        rotary_pct=0.25,
        **s.common,
    )
    return cfg, GPTNeoXForCausalLM


FAMILY = ModelFamily(
    "neox",
    "gpt_neox",
    hf_config,
    lora_targets=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    lora_query_value=("query_key_value",),
    residual_write=("dense_4h_to_h",),
    grouped_query=False,
)
