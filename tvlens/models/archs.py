"""The architectures tvlens builds from scratch (:func:`tvlens.models.hf.build_hf_model`), by
name, in a module without torch: configurations validate against it at import time."""

from __future__ import annotations

from typing import Literal

Architecture = Literal[
    "gpt2", "llama", "neox", "gemma2", "olmo2", "mistral", "gemma3", "qwen2", "qwen3"
]
ARCHITECTURES: tuple[str, ...] = (
    "gpt2", "llama", "neox", "gemma2", "olmo2", "mistral", "gemma3", "qwen2", "qwen3"
)  # fmt: skip
# Architectures that break shortcuts a patching library is tempted to take: Gemma-2 and OLMo-2
# normalise the attention output before it reaches the residual stream (post-norm), Gemma-2
# and Mistral attend within a sliding window (their KV caches drop old positions).
POST_NORM_ARCHITECTURES: tuple[str, ...] = ("gemma2", "olmo2", "gemma3")
SLIDING_WINDOW_ARCHITECTURES: tuple[str, ...] = ("gemma2", "mistral", "gemma3")
