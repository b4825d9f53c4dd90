"""Qwen2: biases on q, k and v."""

from __future__ import annotations

from tvlens.models.families.base import ModelFamily, Sizes


def hf_config(s: Sizes):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2Config(**s.grouped()), Qwen2ForCausalLM


FAMILY = ModelFamily("qwen2", "qwen2", hf_config)
