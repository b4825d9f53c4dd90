"""Task suites: named sets of (input, output) pairs, and ICL prompts built from them.

Names are imported lazily, so that ``get_suite`` (a light module) can check a suite name
before torch is imported (``tvlens.tasks.prompts`` needs it)."""

from importlib import import_module
from typing import Any

_NAMES = {
    "Example": "tvlens.tasks.core",
    "Task": "tvlens.tasks.core",
    "TaskSuite": "tvlens.tasks.core",
    "TEMPLATES": "tvlens.tasks.prompts",
    "ICLPrompt": "tvlens.tasks.prompts",
    "PromptBatch": "tvlens.tasks.prompts",
    "PromptTemplate": "tvlens.tasks.prompts",
    "dummy_query_variants": "tvlens.tasks.prompts",
    "sample_prompts": "tvlens.tasks.prompts",
    "shuffled_label_variants": "tvlens.tasks.prompts",
    "tokenize_prompts": "tvlens.tasks.prompts",
    "available_suites": "tvlens.tasks.registry",
    "describe_suites": "tvlens.tasks.registry",
    "get_suite": "tvlens.tasks.registry",
    "bitwise_suite": "tvlens.tasks.synthetic",
    "latent_mapping_suite": "tvlens.tasks.synthetic",
    "list_suite": "tvlens.tasks.synthetic",
    "null_task": "tvlens.tasks.synthetic",
    "synthetic_vocabulary": "tvlens.tasks.synthetic",
    "word_suite": "tvlens.tasks.words",
}

__all__ = [
    "TEMPLATES",
    "Example",
    "ICLPrompt",
    "PromptBatch",
    "PromptTemplate",
    "Task",
    "TaskSuite",
    "available_suites",
    "describe_suites",
    "bitwise_suite",
    "dummy_query_variants",
    "get_suite",
    "latent_mapping_suite",
    "list_suite",
    "null_task",
    "sample_prompts",
    "shuffled_label_variants",
    "synthetic_vocabulary",
    "tokenize_prompts",
    "word_suite",
]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'tvlens.tasks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
