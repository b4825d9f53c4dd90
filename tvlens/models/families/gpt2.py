"""GPT-2: learned positions, fused q/k/v (``c_attn``), ``Conv1D`` weights stored transposed."""

from __future__ import annotations

from tvlens.models.families.base import ModelFamily, Sizes


def hf_config(s: Sizes):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_positions=s.n_ctx,
        n_embd=s.d_model,
        n_layer=s.n_layers,
        n_head=s.n_heads,
        n_inner=s.d_mlp,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **s.common,
    )
    return cfg, GPT2LMHeadModel


FAMILY = ModelFamily(
    "gpt2",
    "gpt2",
    hf_config,
    lora_targets=("c_attn", "c_proj", "c_fc"),
    lora_query_value=("c_attn",),
    residual_write=r".*\.mlp\.c_proj",  # plain c_proj is also the attention's output
    grouped_query=False,
    conv1d=True,
)
