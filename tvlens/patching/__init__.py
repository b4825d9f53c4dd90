"""Activation patching. Today: last-token patching on a cached prefix (used by function-vector
AIE and task-vector layer sweeps)."""

from tvlens.patching.last_token import PrefixState, chunks, last_token_logits, run_prefix

__all__ = ["PrefixState", "chunks", "last_token_logits", "run_prefix"]
