"""Evaluation: a model's in-context-learning accuracy per task (first token, greedy exact
match), what ``tvlens eval`` runs (:mod:`.icl`, its config :mod:`.config`); scoring steered
models by the whole answer, the first token and KL to ICL (:mod:`.scoring`); the statistics of
method comparisons: hierarchical bootstrap, TOST, minimal detectable difference, verdicts
(:mod:`.stats`). Names are imported lazily, so that the config, which the CLI reads at
start-up, does not load torch."""

from importlib import import_module
from typing import Any

_NAMES = {
    "EvalConfig": "config",
    "ICLEvaluation": "icl",
    "TaskAccuracy": "icl",
    "answer_correctness": "icl",
    "evaluate_icl": "icl",
    "evaluate_prompts": "icl",
    "model_logits": "icl",
    "run_eval": "runner",  # torch-free: checks first, then imports .icl
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(f"tvlens.evaluation.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'tvlens.evaluation' has no attribute {name!r}")
