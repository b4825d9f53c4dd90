"""One record per model family (:class:`ModelFamily`), one module each: read by
:func:`tvlens.models.hf.build_hf_model`, early-block fine-tuning, the tuned baselines of the
comparison and the patching tests. A new family is a module here (registered below) or in your
own package, calling :func:`register_family` before use."""

from tvlens.models.families import gemma2, gemma3, gpt2, llama, mistral, neox, olmo2, qwen2, qwen3
from tvlens.models.families.base import (
    ModelFamily,
    Sizes,
    families,
    family_of_model_type,
    get_family,
    lora_query_value,
    register_family,
    residual_write_sites,
)

# In this order: it is the order of ARCHITECTURES (the oldest families first).
for _module in (gpt2, llama, neox, gemma2, olmo2, mistral, gemma3, qwen2, qwen3):
    register_family(_module.FAMILY)

__all__ = ["ModelFamily", "Sizes", "families", "family_of_model_type", "get_family",
           "lora_query_value", "register_family", "residual_write_sites"]  # fmt: skip
