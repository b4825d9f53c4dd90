"""Qwen3: no q/k/v biases, q/k norms."""

from __future__ import annotations

from tvlens.models.families.base import ModelFamily, Sizes


def hf_config(s: Sizes):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3Config(head_dim=s.d_head, **s.grouped()), Qwen3ForCausalLM


FAMILY = ModelFamily("qwen3", "qwen3", hf_config)
