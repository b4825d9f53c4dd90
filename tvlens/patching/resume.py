"""Moved: running a model from block ``l`` is a model capability, :mod:`tvlens.models.resume`
(``tvlens.models.run_from``). This name stays for code written against it."""

from tvlens.models.resume import (  # noqa: F401  (the names callers used)
    attention_slot,
    attn_out_is_slot_output,
    cache_prefix,
    can_pack,
    can_skip_blocks,
    corrupted_run,
    fixed_attention,
    last_position_mlp,
    mask_positions,
    packed_mask,
    padding_mask,
    resume,
    resume_packed,
    skipped_blocks,
)
