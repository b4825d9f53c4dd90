"""Task suites: named sets of (input, output) pairs, and ICL prompts built from them."""

from tvlens.tasks.core import Example, Task, TaskSuite
from tvlens.tasks.prompts import (
    TEMPLATES,
    ICLPrompt,
    PromptBatch,
    PromptTemplate,
    dummy_query_variants,
    sample_prompts,
    shuffled_label_variants,
    tokenize_prompts,
)
from tvlens.tasks.registry import available_suites, describe_suites, get_suite
from tvlens.tasks.synthetic import (
    bitwise_suite,
    latent_mapping_suite,
    list_suite,
    null_task,
    synthetic_vocabulary,
)
from tvlens.tasks.words import word_suite

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
