"""Patching experiments on a task suite: what ``tvlens patch`` runs.

Clean prompts are k-shot prompts of the suite's tasks; the corruption is one of
``shuffled`` (the same prompts with shuffled demonstration labels: which components carry the
task from the demonstrations, as for function vectors), ``mean`` (each component replaced by
its mean over the prompts) or ``zero`` (zero ablation). The metric is the probability of the
clean answer's first token at the query.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tvlens.errors import ConfigError, EmptyTaskError, PromptError
from tvlens.models.loading import model_and_suite
from tvlens.models.tvmodel import TVModel
from tvlens.names import renamed
from tvlens.patching.attribution import rank_correlation
from tvlens.patching.config import PatchConfig
from tvlens.patching.exact import PatchResult, patch
from tvlens.patching.metrics import AnswerProb
from tvlens.plotting import plot_patching, save_figure
from tvlens.results import Result
from tvlens.runs import CONFIG_FILE, PATCH, PATCHING_FILE, prepare_out_dir, tidy_on_error
from tvlens.runs.config import choices
from tvlens.runs.portable import portable
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


@tidy_on_error
def run_patching(
    model: TVModel | str,
    out: str | Path | None,
    suite: TaskSuite | str | None = None,
    config: PatchConfig | None = None,
    revision: str | None = None,
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> PatchingRun:
    """Patch a component of ``model`` on prompts of ``suite`` (default: its training suite)
    as ``config`` says (a :class:`~tvlens.patching.config.PatchConfig`, or its fields as keyword
    ``options``: ``component="resid"``, ``k=4``...) and, with ``out``, write
    ``out/patching.json``, ``out/config.json`` and the heatmap
    ``out/patching_{component}.{html,png}`` (``..._attribution`` too with ``method="both"``).
    """

    if config is not None and options:
        raise ConfigError(f"Pass config= or its fields {sorted(options)}, not both.")
    cfg = config or PatchConfig(**options)
    if out is not None:
        out = prepare_out_dir(out, PATCH)
    model, suite = model_and_suite(model, suite, revision, device)
    component, positions, method, head_act = cfg.component, cfg.positions, cfg.method, cfg.head_act
    corruption, n_prompts, seed, max_batch = cfg.corruption, cfg.n_prompts, cfg.seed, cfg.max_batch
    tasks = list(cfg.tasks) if cfg.tasks is not None else None
    k = cfg.k if cfg.k is not None else int(model.spec.train_info.get("k", 5))
    clean, corrupted = patching_prompts(model, suite, k, n_prompts, seed=seed, tasks=tasks)
    metric = AnswerProb.from_batch(clean)
    if corruption == "shuffled":
        pair: tuple[Any, Any] = (clean, corrupted)
        source: str = "clean"
    else:  # ablate each component of the clean run itself
        pair, source = (clean, clean), corruption
    config = {
        **cfg.to_dict(),
        "model": model.spec.name,
        "revision": model.spec.revision,
        "suite": suite.name,
        "metric": "probability of the clean answer's first token at the query",
        "k": k,
        "prompt_bos": model.prompt_bos,
        "n_prompts": len(clean),
        "n_tokens": int(clean.tokens.shape[1]),
    }
    kw = {"head_act": head_act, "source": source}
    exact = attribution = None
    if method in ("exact", "both"):
        exact = patch(model, *pair, metric, component, positions, max_batch=max_batch,
                      progress=progress, **kw)  # fmt: skip
    if method in ("attribution", "both"):
        attribution = patch(model, *pair, metric, component, positions, method="attribution",
                            progress=progress, **kw)  # fmt: skip
    run = PatchingRun(exact, attribution, config)
    if out is not None:
        run.save(out / PATCHING_FILE)  # PatchingRun.load(out / "patching.json") reads it back
        (out / CONFIG_FILE).write_text(json.dumps(portable(config), indent=2) + "\n")
        for res in (exact, attribution):
            if res is not None:
                suffix = "" if res is run.main else f"_{res.method}"
                save_figure(plot_patching(res), out / f"patching_{component}{suffix}")
    return run
