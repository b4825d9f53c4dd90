"""The comparison's vector baselines, all reading the ``cfg.vector`` block
(:class:`~tvlens.compare.options.VectorOptions`): the task vector (Hendel et al. 2023) and the
function vector (Todd et al. 2023) in the comparison, the extraction methods themselves
(:class:`~tvlens.extraction.methods.HendelTaskVector`,
:func:`~tvlens.extraction.function_vectors.sum_head_outputs`) extracted from each task's
instructed demonstrations (averaged over its training instructions) and written at the query;
the layer is chosen on dev queries by the task-vector report's rule
(:func:`~tvlens.injection.sweep.best_on_dev`). They are told the test query's task ("oracle
label"). Every other registered extraction method joins as ``vector:<name>``
(:class:`ExtractionVectorMethod`), with nothing to add here.

Every method of the comparison is a :class:`tvlens.compare.methods.SteeringMethod` registered
by name in :mod:`tvlens.compare.registry`: zero-shot and ICL are
:class:`~tvlens.compare.methods.ZeroShot` and :class:`~tvlens.compare.methods.ICL`, the
trained methods are in :mod:`tvlens.compare.tuned` (trained with
:func:`tvlens.compare.fitting.engine_fit`), retrieval in :mod:`tvlens.compare.retrieval`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tvlens.atv.data import ATVSplits
from tvlens.compare.context import CompareContext
from tvlens.compare.data import merged
from tvlens.compare.fitting import by_task
from tvlens.compare.methods import SteeringMethod
from tvlens.compare.options import VectorOptions
from tvlens.evaluation.icl import answer_correctness, note_predictions
from tvlens.evaluation.scoring import greedy_exact_match
from tvlens.extraction.function_vectors import head_aie, mean_head_outputs, sum_head_outputs
from tvlens.extraction.methods import (
    Extracted,
    ExtractionMethod,
    FunctionVector,
    HendelTaskVector,
    ResidualWrite,
)
from tvlens.extraction.registry import method_object
from tvlens.injection.evaluate import first_token_correct, steer_for
from tvlens.injection.inject import inject
from tvlens.injection.intervention import apply_intervention
from tvlens.injection.sweep import best_on_dev, layer_sweep_correct
from tvlens.tasks.core import Task
from tvlens.tasks.prompts import (
    ICLPrompt,
    sample_prompts,
    shuffled_label_variants,
    tokenize_prompts,
)

# ---------------------------------------------------------------------------- shared pieces


def tasks_of(splits: ATVSplits, part: str = "train") -> dict[str, Task]:
    """One :class:`Task` per task name from a split's zero-shot prompts (their queries)."""
    by: dict[str, list] = {}
    for p in getattr(splits, part):
        by.setdefault(p.task, []).append(p.query)
    return {t: Task(t, tuple(exs)) for t, exs in by.items()}


# ------------------------------------------------------------------- task / function vectors


class _VectorMethod(SteeringMethod):
    """A vector per task written at the query position of zero-shot prompts, at the layer
    that scores best on the task's dev queries."""

    mode = HendelTaskVector.mode  # how the extraction method writes it
    scale = 1.0
    options_class = VectorOptions

    def __init__(
        self, ctx: CompareContext, name: str, seed: int, variant: dict | None = None
    ) -> None:
        self.bind(ctx, name, seed, variant)
        L = self.target.n_layers
        layers = self.options.sweep_layers or range(L)
        self.layers = [self.target.check_layer(x) for x in layers]
        self.vectors: dict[str, tuple[Tensor, int]] = {}

    def task_vectors(self, task: Task, ti: int) -> Float[Tensor, "n_layers d_model"]:
        raise NotImplementedError

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:

        train, dev = tasks_of(splits, "train"), by_task(splits.dev)
        chosen = {}
        for ti, (name, task) in enumerate(train.items()):
            vecs = self.task_vectors(task, ti)
            dev_prompts = [splits.dev[i] for i in dev[name]]
            # the comparison's metric is the first answer token (said in comparison.json)
            ok = layer_sweep_correct(self.target, dev_prompts, vecs, self.layers, self.mode,
                                     self.scale, max_batch=256, answer_token="first")  # fmt: skip
            best, _ = best_on_dev(ok)  # the task-vector report's rule
            self.vectors[name] = (vecs[best].detach(), self.layers[best])
            chosen[name] = self.layers[best]
        return {"layers": chosen}

    def vector_keys(self, prompts: Sequence[ICLPrompt]) -> list[str]:
        """Whose vector each prompt gets: its own task's (the label is given)."""
        return [p.task for p in prompts]

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:

        first = np.zeros(len(prompts), dtype=bool)
        exact = np.zeros(len(prompts), dtype=bool)
        keys: dict[str, list[int]] = {}
        for i, k in enumerate(self.vector_keys(prompts)):
            keys.setdefault(k, []).append(i)
        for task, idx in keys.items():
            vec, layer = self.vectors[task]
            for start in range(0, len(idx), self.batch_size):
                rows = idx[start : start + self.batch_size]
                pb = tokenize_prompts([prompts[i] for i in rows], self.target, "left",
                                      include_answer=True)  # fmt: skip
                # Written at the query position only: the answer tokens that follow read it
                # through attention, as generated tokens would from the KV cache.
                with inject(self.target, vec, layer, self.mode, self.scale, pb.query_pos):
                    f, e = answer_correctness(self.target, pb)
                first[rows], exact[rows] = f.numpy(), e.numpy()
        return first, exact


class TaskVectorMethod(_VectorMethod):
    """Hendel et al. 2023: the mean residual after each layer at the last token of ``k``-shot
    prompts with dummy queries, written over (replace) the zero-shot query's residual."""

    def task_vectors(self, task: Task, ti: int) -> Tensor:

        opts = self.options
        templates = self.ctx.data.templates[task.name]
        n = max(1, -(-opts.n_extract // len(templates)))  # the prompts split over instructions
        method = HendelTaskVector()  # the extraction method itself, on each instruction
        vecs = [
            method.extract(self.target, task, k=min(opts.k, len(task) - 2), n_extract=n,
                           seed=self.seed * 7919 + 31 * ti + j, template=tmpl,
                           max_batch=256, progress=False).vector.vectors[self.layers]
            for j, tmpl in enumerate(templates)
        ]  # fmt: skip
        return torch.stack(vecs).mean(0)


class FunctionVectorMethod(_VectorMethod):
    """Todd et al. 2023: the heads with the largest average indirect effect, averaged over
    ``aie_tasks`` in-domain tasks (the heads are shared, as in the paper); a task's vector
    is the sum of those heads' mean outputs over its clean ``k``-shot prompts, added at the
    query."""

    mode = FunctionVector.mode

    def heads(self) -> list[tuple[int, int]]:

        key = ("fv_heads", self.seed)
        if key not in self.ctx.cache:
            opts, t = self.options, self.target
            aies = []
            train = tasks_of(self.ctx.data.in_domain)
            for ti, task in enumerate(list(train.values())[: opts.aie_tasks]):
                ps = sample_prompts(
                    task,
                    min(opts.k, len(task) - 1),
                    opts.aie_prompts,
                    seed=self.seed * 7919 + 500 + ti,
                    template=self.ctx.data.templates[task.name][0],
                )
                clean = tokenize_prompts(ps, t, "left")
                bad = tokenize_prompts(shuffled_label_variants(ps, seed=ti), t, "left")
                aies.append(head_aie(t, bad, mean_head_outputs(t, clean), max_batch=256))
            aie = torch.stack(aies).mean(0)
            order = torch.argsort(aie.flatten(), descending=True)[: opts.top_k_heads]
            self.ctx.cache[key] = [(int(i) // t.n_heads, int(i) % t.n_heads) for i in order]
        return self.ctx.cache[key]

    def task_vectors(self, task: Task, ti: int) -> Tensor:

        opts, t = self.options, self.target
        templates = self.ctx.data.templates[task.name]
        n = max(1, -(-opts.n_extract // len(templates)))
        k = min(opts.k, len(task) - 1)
        ps = [p for j, tmpl in enumerate(templates)
              for p in sample_prompts(task, k, n, seed=self.seed * 7919 + 31 * ti + j,
                                      template=tmpl)]  # fmt: skip
        means = mean_head_outputs(t, tokenize_prompts(ps, t, "left"))
        fv = sum_head_outputs(t, means, self.heads())  # the extraction method's sum
        return fv[None].expand(len(self.layers), -1)


# ------------------------------------------------------------- any registered extraction method


class ExtractionVectorMethod(_VectorMethod):
    """Any extraction method (:mod:`tvlens.extraction.registry`: ICV, I2CL, state vectors, LTV,
    a package's own) as a fixed-vector baseline, ``vector:<name>`` in the comparison: per
    task, the method extracts from ``k``-shot prompts of the task's training queries in its
    first training instruction; the choice of its dev grid (every layer by default; only
    ``sweep_layers`` where a choice names a layer) that scores best on the task's dev queries
    (first answer token, the task-vector report's rule) is applied to the test prompts, which
    are scored by greedy decoding (steered on the prompt, or at every step where the method
    writes every position: :func:`tvlens.injection.evaluate.steer_for`). It is told the test
    task (oracle label), as the task vector is."""

    def __init__(
        self, ctx: CompareContext, name: str, seed: int, variant: dict | None = None,
        extraction: str | ExtractionMethod = HendelTaskVector.name,
    ) -> None:  # fmt: skip
        super().__init__(ctx, name, seed, variant)
        self.method = method_object(extraction)
        self.interventions: dict[str, Any] = {}
        fewest = min(len(t) for t in tasks_of(merged(*ctx.data.groups().values())).values())
        self.k = min(self.options.k, fewest - 2)  # as the task vector: 2 queries kept back
        if self.k < self.method.min_k:
            self.skip_reason = (
                f"{self.method.name} needs {self.method.min_k}-shot prompts; this "
                f"configuration allows {self.k} (vector k, n_train)"
            )

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:

        train, dev = tasks_of(splits, "train"), by_task(splits.dev)
        chosen = {}
        for ti, (name, task) in enumerate(train.items()):
            ex = self.method.extract(
                self.target, task, k=self.k, n_extract=self.options.n_extract,
                seed=self.seed * 7919 + 31 * ti, template=self.ctx.data.templates[name][0],
                max_batch=256, progress=False,
            )  # fmt: skip
            grid = [c for c in self.method.dev_grid(self.target, ex)
                    if "layer" not in c or int(c["layer"]) in self.layers]  # fmt: skip
            ok = self.dev_correct(ex, grid, [splits.dev[i] for i in dev[name]])
            best, _ = best_on_dev(ok)
            self.interventions[name] = self.method.intervention(self.target, ex, **grid[best])
            chosen[name] = dict(grid[best])
        return {"extraction": self.method.name, "options": self.method.options(),
                "chosen": chosen}  # fmt: skip

    def dev_correct(
        self, ex: Extracted, grid: list[dict[str, Any]], prompts: list[ICLPrompt]
    ) -> Bool[Tensor, "n_prompts n_choices"]:
        """Whether each dev prompt's first answer token is right under each choice."""
        m, t = self.method, self.target
        if isinstance(m, ResidualWrite) and grid == [{"layer": x} for x in self.layers]:
            # one residual write at one layer: every layer from one prefix run (the same
            # numbers as applying its intervention layer by layer)
            vecs = m.layer_vectors(t, ex)[self.layers]
            return layer_sweep_correct(t, prompts, vecs, self.layers, m.mode, m.strength,
                                       max_batch=256, answer_token="first")  # fmt: skip
        return torch.stack(
            [first_token_correct(t, prompts, m.intervention(t, ex, **c), 256) for c in grid], 1
        )

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:

        first = np.zeros(len(prompts), dtype=bool)
        exact = np.zeros(len(prompts), dtype=bool)
        rows_of: dict[str, list[int]] = {}
        for i, k in enumerate(self.vector_keys(prompts)):
            rows_of.setdefault(k, []).append(i)
        for task, rows in rows_of.items():
            iv = self.interventions[task]
            # one vector per prompt ([batch, d_model]) needs the whole batch in one forward
            bs = None if any(w.vector.ndim == 2 for w in iv.writes) else self.batch_size
            batch = tokenize_prompts([prompts[i] for i in rows], self.target, "left")
            steered = partial(apply_intervention, self.target, iv)
            s = greedy_exact_match(self.target, batch, intervention_ctx=steered,
                                   steer=steer_for(iv), batch_size=bs)  # fmt: skip
            first[rows], exact[rows] = s.first_token, s.exact
            said = zip(batch.prompts, s.generated, batch.answer_ids, strict=True)
            note_predictions([(p.task, p.query.input, list(g[: len(a)])) for p, g, a in said])
        return first, exact
