"""The architectures tvlens builds from scratch (:func:`tvlens.models.hf.build_hf_model`), by
name, in a module without torch: configurations validate against it at import time. Each is a
record in :mod:`tvlens.models.families`; these are views of that registry."""

from __future__ import annotations

from typing import Literal

from tvlens.models.families import families

ARCHITECTURES: tuple[str, ...] = tuple(families())
Architecture = Literal[ARCHITECTURES]  # type: ignore[valid-type]
# Architectures that break shortcuts a patching library is tempted to take: Gemma-2 and OLMo-2
# normalise the attention output before it reaches the residual stream (post-norm), Gemma-2
# and Mistral attend within a sliding window (their KV caches drop old positions).
POST_NORM_ARCHITECTURES: tuple[str, ...] = tuple(n for n, f in families().items() if f.post_norm)
SLIDING_WINDOW_ARCHITECTURES: tuple[str, ...] = tuple(
    n for n, f in families().items() if f.sliding_window
)
