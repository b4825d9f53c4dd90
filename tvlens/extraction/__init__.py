"""Extraction: residual vectors at the query (Hendel), per-query vectors, function vectors."""

from tvlens.extraction.function_vectors import (
    HeadTable,
    function_vector,
    head_aie,
    mean_head_outputs,
)
from tvlens.extraction.residual import (
    activations_at_positions,
    hendel_task_vector,
    per_query_vectors,
    residual_at_query,
)
from tvlens.extraction.vectors import TaskVector, VectorMismatchError

__all__ = [
    "HeadTable",
    "TaskVector",
    "VectorMismatchError",
    "activations_at_positions",
    "function_vector",
    "head_aie",
    "hendel_task_vector",
    "mean_head_outputs",
    "per_query_vectors",
    "residual_at_query",
]
