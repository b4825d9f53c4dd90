"""OLMo-2: norms after attention and MLP (post-norm), q/k norms."""

from __future__ import annotations

from tvlens.models.families.base import ModelFamily, Sizes


def hf_config(s: Sizes):
    from transformers import Olmo2Config, Olmo2ForCausalLM

    return Olmo2Config(**s.grouped()), Olmo2ForCausalLM


FAMILY = ModelFamily("olmo2", "olmo2", hf_config, post_norm=True)
