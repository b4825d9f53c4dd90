"""Extraction: residual vectors at the query (Hendel), per-query vectors, function vectors;
the extraction methods as objects (:mod:`.methods`) and their registry (:mod:`.registry`).
Names are imported lazily, so that the registry (read by the configs and the CLI) does not
load torch."""

from importlib import import_module
from typing import Any

_NAMES = {
    "HeadTable": "function_vectors",
    "function_vector": "function_vectors",
    "head_aie": "function_vectors",
    "mean_head_outputs": "function_vectors",
    "activations_at_positions": "residual",
    "hendel_task_vector": "residual",
    "per_query_vectors": "residual",
    "residual_at_query": "residual",
    "TaskVector": "vectors",
    "VectorMismatchError": "vectors",
    "EXTRACTION_METHODS": "registry",
    "ExtractionMethod": "methods",
    "Extracted": "methods",
    "FunctionVector": "methods",
    "HendelTaskVector": "methods",
    "ICV": "methods",
    "I2CL": "methods",
    "StateVector": "methods",
    "LTV": "methods",
    "ResidualWrite": "methods",
    "option": "methods",
    "method_object": "registry",
    "register_extraction_method": "registry",
    "get_extraction_method": "registry",
    "VectorsConfig": "config",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(f"tvlens.extraction.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'tvlens.extraction' has no attribute {name!r}")
