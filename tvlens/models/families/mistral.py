"""Mistral: a sliding window on every layer (default: none)."""

from __future__ import annotations

from tvlens.models.families.base import ModelFamily, Sizes


def hf_config(s: Sizes):
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(head_dim=s.d_head, sliding_window=s.sliding_window, **s.grouped())
    return cfg, MistralForCausalLM


FAMILY = ModelFamily("mistral", "mistral", hf_config, sliding_window=True)
