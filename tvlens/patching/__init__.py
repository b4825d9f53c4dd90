"""Activation patching: residual / attention / MLP / head patching that recomputes only what each
patch can change (:mod:`~tvlens.patching.exact`), attribution patching
(:mod:`~tvlens.patching.attribution`), and last-token patching on a cached prefix
(:mod:`~tvlens.patching.last_token`, used by task-vector layer sweeps)."""

from tvlens.models.resume import cache_prefix, resume, skipped_blocks
from tvlens.patching.attribution import attribution_patch, rank_correlation
from tvlens.patching.exact import patch
from tvlens.patching.inputs import COMPONENTS, POSITIONS, component_hook
from tvlens.patching.last_token import PrefixState, chunks, last_token_logits, run_prefix
from tvlens.patching.metrics import AnswerProb, LogitDiff, Metric
from tvlens.patching.result import PatchResult, position_labels
from tvlens.patching.run import PatchingRun, patching_prompts, run_patching

__all__ = [
    "COMPONENTS",
    "POSITIONS",
    "AnswerProb",
    "LogitDiff",
    "Metric",
    "PatchResult",
    "PatchingRun",
    "PrefixState",
    "attribution_patch",
    "cache_prefix",
    "chunks",
    "component_hook",
    "last_token_logits",
    "patch",
    "patching_prompts",
    "position_labels",
    "rank_correlation",
    "resume",
    "run_patching",
    "run_prefix",
    "skipped_blocks",
]
