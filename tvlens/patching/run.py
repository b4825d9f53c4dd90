"""Patching experiments on a task suite: the prompts and the result of what ``tvlens patch``
runs (:func:`tvlens.patching.runner.run_patching`).

Clean prompts are k-shot prompts of the suite's tasks; the corruption is one of
``shuffled`` (the same prompts with shuffled demonstration labels: which components carry the
task from the demonstrations, as for function vectors), ``mean`` (each component replaced by
its mean over the prompts) or ``zero`` (zero ablation). The metric is the probability of the
clean answer's first token at the query.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tvlens.errors import ConfigError, EmptyTaskError, PromptError
from tvlens.models.tvmodel import TVModel
from tvlens.names import renamed
from tvlens.patching.attribution import rank_correlation
from tvlens.patching.config import PatchConfig
from tvlens.patching.exact import PatchResult
from tvlens.plotting import plot_patching
from tvlens.results import Result
from tvlens.runs.config import choices
from tvlens.tasks.core import TaskSuite
from tvlens.tasks.prompts import (
    ICLPrompt,
    PromptBatch,
    sample_prompts,
    shuffled_label_variants,
    tokenize_prompts,
)

CORRUPTIONS = choices(PatchConfig, "corruption")
METHODS = choices(PatchConfig, "method")


@dataclass
class PatchingRun(Result):
    """Results of one ``tvlens patch`` call (``attribution`` and ``spearman`` with ``both``)."""

    exact: PatchResult | None
    attribution: PatchResult | None
    config: dict = field(default_factory=dict)

    @property
    def main(self) -> PatchResult:
        return self.exact if self.exact is not None else self.attribution  # type: ignore[return-value]

    @property
    def spearman(self) -> float | None:
        if self.exact is None or self.attribution is None:
            return None
        return rank_correlation(self.exact, self.attribution)

    def __str__(self) -> str:
        """The clean and corrupted metric, the five largest effects, and the rank correlation
        of attribution with exact patching (with both)."""
        res, c = self.main, self.config
        lines = [f"{res.method} patching, {c['component']} ({c['positions']}): clean "
                 f"{res.clean_metric:.3f}, corrupted {res.corrupted_metric:.3f}; "
                 f"{c['n_prompts']} prompts"]  # fmt: skip
        lines += ["  " + " ".join(f"{d}={i}" for d, i in where.items()) + f"  {effect:+.4f}"
                  for where, effect in res.top(5)]  # fmt: skip
        if self.spearman is not None:
            lines.append(f"attribution vs exact: Spearman {self.spearman:.3f}")
        return "\n".join(lines)

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy: the exact and attribution results' rows stacked (their ``method`` column
        tells them apart)."""
        parts = [r.to_dataframe() for r in (self.exact, self.attribution) if r is not None]
        return pd.concat(parts, ignore_index=True)

    def plot(self, **kwargs):
        """The exact patching heatmap (else the attribution one)."""

        return plot_patching(self.exact or self.attribution, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "exact": None if self.exact is None else self.exact.to_dict(),
            "attribution": None if self.attribution is None else self.attribution.to_dict(),
            "spearman": self.spearman,
        }


def patching_prompts(
    model: TVModel,
    suite: TaskSuite,
    k: int,
    n_prompts: int | None = None,
    seed: int = 0,
    template: str | None = None,
    tasks: list[str] | None = None,
    *,
    n_per_task: int | None = None,
) -> tuple[PromptBatch, PromptBatch]:
    """Clean prompts and their shuffled-label versions (``n_prompts`` per task), kept to the
    pairs whose two prompts have the most common token length: no padding, so position ``p``
    is the same slot of the template in every row (axis labels read from row 0 hold for all).
    ``n_per_task`` is the old name of ``n_prompts`` (deprecated)."""

    n_prompts = renamed("n_per_task", n_per_task, "n_prompts", n_prompts)
    if n_prompts is None:
        raise ConfigError("patching_prompts needs n_prompts (prompts per task).")
    tmpl = model.template(template)
    chosen = [t for t in suite if tasks is None or t.name in tasks]
    if not chosen:
        raise EmptyTaskError(
            f"No task of suite {suite.name!r} matches {tasks}: choose from {suite.names}."
        )
    pairs: list[tuple[ICLPrompt, ICLPrompt]] = []
    for i, task in enumerate(chosen):
        clean = sample_prompts(task, k, n_prompts, seed=seed + i, template=tmpl)
        pairs += zip(clean, shuffled_label_variants(clean, seed=seed + 1000 + i), strict=True)

    def n_tokens(p: ICLPrompt) -> int:
        return int(tokenize_prompts([p], model).tokens.shape[1])

    lengths = [(n_tokens(a), n_tokens(b)) for a, b in pairs]
    same = [la for la, lb in lengths if la == lb]
    if not same:
        raise PromptError("No clean/corrupted prompt pair has equal token lengths.")
    common = Counter(same).most_common(1)[0][0]
    keep = [p for p, (la, lb) in zip(pairs, lengths, strict=True) if la == lb == common]
    clean = tokenize_prompts([a for a, _ in keep], model, padding_side="left")
    corrupted = tokenize_prompts([b for _, b in keep], model, padding_side="left")
    return clean, corrupted
