"""The comparison's methods that are not trained, and what the trained ones share.

Every method is a :class:`CompareMethod` (a :class:`tvlens.atv.methods.SteeringMethod`),
registered by name in :mod:`tvlens.atv.registry`; all score the same instructed prompts the
same way (first answer token and greedy exact match).

* ``zero_shot``, ``icl_k``: the frozen target, on the instructed query alone or with ``k``
  demonstrations of the query's task after the instruction.
* ``task_vector`` (Hendel et al. 2023), ``function_vector`` (Todd et al. 2023): one vector per
  task, extracted from that task's instructed demonstrations (averaged over its training
  instructions) and written at the query; the layer is chosen on dev queries. They are told
  the test query's task ("oracle label").

The trained methods (:mod:`tvlens.atv.tuned`) train with :func:`tvlens.atv.fitting.engine_fit`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from tvlens.atv.compare_setup import CompareContext, merged
from tvlens.atv.data import ATVSplits
from tvlens.atv.fitting import by_task
from tvlens.atv.methods import ICL, SteeringMethod, ZeroShot
from tvlens.errors import PromptError, TVLensError
from tvlens.extraction.function_vectors import head_aie, mean_head_outputs
from tvlens.extraction.residual import hendel_task_vector
from tvlens.icl_accuracy import answer_correctness, evaluate_prompts
from tvlens.injection.inject import inject
from tvlens.injection.sweep import layer_sweep_correct
from tvlens.models.hf import quiet_transformers
from tvlens.models.loading import TVModel
from tvlens.tasks.core import Task
from tvlens.tasks.prompts import (
    ICLPrompt,
    sample_prompts,
    shuffled_label_variants,
    tokenize_prompts,
)

# ---------------------------------------------------------------------------- shared pieces


class CompareMethod(SteeringMethod):
    """A method of the comparison: where it runs (``bridge`` or plain ``hf``), why it is
    skipped (None: it runs), and its prompt length per query."""

    path = "bridge"
    skip_reason: str | None = None
    virtual_tokens = 0

    def __init__(
        self, ctx: CompareContext, name: str, seed: int, variant: dict | None = None
    ) -> None:
        self.ctx, self.name, self.seed = ctx, name, seed
        self.variant = dict(variant or {})
        self.target: TVModel = ctx.target
        self.batch_size = ctx.cfg.eval_batch_size
        self.run_dir: Path | None = None  # set by the cell: where a trained method trains

    # Trained methods: the weights of the best-dev epoch (a sweep cell keeps them so that the
    # selected variant's seed 0 is scored without training again).
    def save_best(self, path: Path) -> None:
        raise NotImplementedError(f"{self.name} has no trained weights.")

    def restore(self, path: Path) -> None:
        raise NotImplementedError(f"{self.name} has no trained weights.")

    def scored_prompts(self, prompts: Sequence[ICLPrompt]) -> list[ICLPrompt]:
        """The prompts the target reads for these queries (zero-shot unless overridden)."""
        return list(prompts)

    def by_length(self, prompts: Sequence[ICLPrompt]) -> tuple[list[ICLPrompt], list[int]]:
        """``prompts`` shortest first, with the prompt tokens the target reads for each (BOS
        included, answer excluded). The compare scores in this order so that a batch pads
        little: in task order 34% of the cpu preset's zero-shot tokens were pads; sorted, a
        query scored 1.25x (bridge) to 1.5x (HF) faster (SmolLM2-135M, 1 thread). A query's
        score does not depend on the order."""
        lens = []
        ps = self.scored_prompts(prompts)
        for start in range(0, len(ps), 256):
            b = tokenize_prompts(ps[start : start + 256], self.target, device="cpu")
            lens += b.attention_mask.sum(-1).tolist()
        order = np.argsort(lens, kind="stable")
        return [prompts[i] for i in order], [lens[i] for i in order]


def tasks_of(splits: ATVSplits, part: str = "train") -> dict[str, Task]:
    """One :class:`Task` per task name from a split's zero-shot prompts (their queries)."""
    by: dict[str, list] = {}
    for p in getattr(splits, part):
        by.setdefault(p.task, []).append(p.query)
    return {t: Task(t, tuple(exs)) for t, exs in by.items()}


# ---------------------------------------------------------------------------- zero-shot, ICL


class ZeroShotMethod(CompareMethod):
    """:class:`tvlens.atv.methods.ZeroShot` in the comparison. Also times the plain HF model
    on the same queries (the reference for the peft methods' inference time) and checks it
    agrees with the bridge."""

    def __init__(
        self, ctx: CompareContext, name: str, seed: int, variant: dict | None = None
    ) -> None:
        super().__init__(ctx, name, seed, variant)
        self.method = ZeroShot(self.target, self.batch_size)

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:

        # Every 4th test query, shortest first as the compare scores: the reference time
        # per query of the plain HF path, and a check that both paths score alike (the peft
        # methods run on the plain HF model). A quarter keeps this cell near one scoring pass.
        if self.target.spec.source == "memory":  # no plain HF copy to time (fresh_hf)
            return {"hf_infer_seconds_per_query": None, "hf_checked_queries": 0}
        prompts, _ = self.by_length(
            [p for s in self.ctx.data.groups().values() for p in s.test][::4]
        )
        hf = fresh_hf(self.target)
        t0 = time.perf_counter()
        f_hf, _ = evaluate_prompts(hf, prompts, tokenizer=self.target, batch_size=self.batch_size)
        dt = (time.perf_counter() - t0) / len(prompts)
        f_bridge, _ = self.correctness(prompts)
        del hf
        return {"hf_infer_seconds_per_query": dt, "hf_checked_queries": len(prompts),
                "hf_agrees_with_bridge": float((f_hf == f_bridge).mean())}  # fmt: skip

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        return self.method.correctness(prompts)


class ICLMethod(CompareMethod):
    """:class:`tvlens.atv.methods.ICL` in the comparison: ``k`` demonstrations of the query's
    task from its training queries (in-domain or unseen: the method reads the test task's
    demonstrations; ATV does not). Skipped when a prompt exceeds the context."""

    def __init__(
        self, ctx: CompareContext, name: str, seed: int, variant: dict | None = None, k: int = 5
    ) -> None:
        super().__init__(ctx, name, seed, variant)
        self.k = k
        self.method = ICL(self.target, k, seed, self.batch_size)
        self.method.fit(merged(*ctx.data.groups().values()))
        fewest = min(len(t) for t in self.method.demos.values())
        if fewest < k:  # demonstrations come from the training queries only
            self.skip_reason = (
                f"{k}-shot prompts need {k} training queries per task as demonstrations; "
                f"this configuration has {fewest} (n_train)"
            )
            return
        tests = [p for s in ctx.data.groups().values() for p in s.test]
        try:
            lens = [
                tokenize_prompts(self.scored_prompts(tests[i : i + 256]), self.target,
                                 include_answer=True, device="cpu").attention_mask.sum(-1).max()
                for i in range(0, len(tests), 256)
            ]  # fmt: skip
        except PromptError as e:
            self.skip_reason = f"{k}-shot prompts do not fit the context: {e}"
        else:
            self.max_tokens = int(max(lens))

    def scored_prompts(self, prompts: Sequence[ICLPrompt]) -> list[ICLPrompt]:
        return self.method.prompts(prompts)

    def correctness(self, prompts: Sequence[ICLPrompt]) -> tuple[np.ndarray, np.ndarray]:
        return self.method.correctness(prompts)


# ------------------------------------------------------------------- task / function vectors


class _VectorMethod(CompareMethod):
    """A vector per task written at the query position of zero-shot prompts, at the layer
    that scores best on the task's dev queries."""

    mode = "replace"
    scale = 1.0

    def __init__(
        self, ctx: CompareContext, name: str, seed: int, variant: dict | None = None
    ) -> None:
        super().__init__(ctx, name, seed, variant)
        L = self.target.n_layers
        self.layers = [self.target.check_layer(x) for x in (ctx.cfg.sweep_layers or range(L))]
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
            best = int(torch.argmax(ok.float().mean(0)))  # first layer among ties
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
    """Hendel et al. 2023: the mean residual after each layer at the last token of ``tv_k``-shot
    prompts with dummy queries, written over (replace) the zero-shot query's residual."""

    def task_vectors(self, task: Task, ti: int) -> Tensor:

        cfg = self.ctx.cfg
        templates = self.ctx.data.templates[task.name]
        n = max(1, -(-cfg.n_extract // len(templates)))  # the prompts split over instructions
        vecs = [
            hendel_task_vector(self.target, task, min(cfg.tv_k, len(task) - 2), n,
                               seed=self.seed * 7919 + 31 * ti + j, template=tmpl,
                               layers=self.layers).vectors
            for j, tmpl in enumerate(templates)
        ]  # fmt: skip
        return torch.stack(vecs).mean(0)


class FunctionVectorMethod(_VectorMethod):
    """Todd et al. 2023: the heads with the largest average indirect effect, averaged over
    ``fv_aie_tasks`` in-domain tasks (the heads are shared, as in the paper); a task's vector
    is the sum of those heads' mean outputs over its clean ``tv_k``-shot prompts, added at the
    query."""

    mode = "add"

    def heads(self) -> list[tuple[int, int]]:

        key = ("fv_heads", self.seed)
        if key not in self.ctx.cache:
            cfg, t = self.ctx.cfg, self.target
            aies = []
            train = tasks_of(self.ctx.data.in_domain)
            for ti, task in enumerate(list(train.values())[: cfg.fv_aie_tasks]):
                ps = sample_prompts(
                    task,
                    min(cfg.tv_k, len(task) - 1),
                    cfg.fv_aie_prompts,
                    seed=self.seed * 7919 + 500 + ti,
                    template=self.ctx.data.templates[task.name][0],
                )
                clean = tokenize_prompts(ps, t, "left")
                bad = tokenize_prompts(shuffled_label_variants(ps, seed=ti), t, "left")
                aies.append(head_aie(t, bad, mean_head_outputs(t, clean), max_batch=256))
            aie = torch.stack(aies).mean(0)
            order = torch.argsort(aie.flatten(), descending=True)[: cfg.top_k_heads]
            self.ctx.cache[key] = [(int(i) // t.n_heads, int(i) % t.n_heads) for i in order]
        return self.ctx.cache[key]

    def task_vectors(self, task: Task, ti: int) -> Tensor:

        cfg, t = self.ctx.cfg, self.target
        templates = self.ctx.data.templates[task.name]
        n = max(1, -(-cfg.n_extract // len(templates)))
        k = min(cfg.tv_k, len(task) - 1)
        ps = [p for j, tmpl in enumerate(templates)
              for p in sample_prompts(task, k, n, seed=self.seed * 7919 + 31 * ti + j,
                                      template=tmpl)]  # fmt: skip
        means = mean_head_outputs(t, tokenize_prompts(ps, t, "left"))
        fv = torch.zeros(t.d_model, device=means.device, dtype=means.dtype)
        with torch.no_grad():
            for layer, head in self.heads():
                fv += t.head_outputs(means[layer], layer)[head]
        return fv[None].expand(len(self.layers), -1)


# ---------------------------------------------------------------------------- peft


def hf_source(target: TVModel) -> tuple[str, str | None]:
    s = target.spec
    if s.path:
        return s.path, None
    return s.name, s.revision


def fresh_hf(target: TVModel) -> nn.Module:
    """A separate plain HF copy of the target (same weights, same device and dtype), loaded
    again from its folder or hub name."""
    from transformers import AutoModelForCausalLM

    if target.spec.source == "memory":
        # The bridge wraps the HF model's modules in place: no plain HF model is left to copy.
        raise TVLensError(
            "The peft baselines train a plain HF copy of the target, and a model passed in "
            "memory has none left to copy: save it (model.save_pretrained(folder), with its "
            "tokenizer) and pass the folder as the target."
        )
    src, rev = hf_source(target)
    with quiet_transformers():
        hf = AutoModelForCausalLM.from_pretrained(src, revision=rev, dtype=target.dtype)
    return hf.to(target.device).eval()
