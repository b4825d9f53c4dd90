"""An ELICIT-style retrieval baseline (Wang et al. 2025, "ELICIT: LLM augmentation via external
in-context capability"): a library of one task vector per in-domain task, and at test time the
vector of the task whose stored queries lie nearest to the test query, chosen without the
task's label. On an unseen task it is the nearest in-domain task's vector.

The library's vectors are Hendel et al.'s task vectors at each task's dev-chosen layer
(:class:`tvlens.compare.baselines.TaskVectorMethod`); a query is represented by the target's
residual at its last token after ``retrieval_layer`` (default: the middle layer), and the
``retrieval_k`` nearest stored training queries (cosine) vote for a task (both settings in the
``cfg.vector`` block, with the library's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from tvlens.atv.data import ATVSplits
from tvlens.compare.baselines import TaskVectorMethod
from tvlens.extraction.residual import residual_at_query
from tvlens.tasks.prompts import ICLPrompt, tokenize_prompts


class RetrievalMethod(TaskVectorMethod):
    """Task vectors of the in-domain tasks, retrieved by the query (no label at test time)."""

    def layer(self) -> int:
        chosen = self.options.retrieval_layer
        return self.target.check_layer(self.target.n_layers // 2 if chosen is None else chosen)

    def represent(self, prompts: Sequence[ICLPrompt]) -> Float[Tensor, "batch d_model"]:
        """Each prompt's residual after :meth:`layer` at its last token, unit length."""
        batch = tokenize_prompts(list(prompts), self.target, "left")
        h = residual_at_query(self.target, batch, [self.layer()], batch_size=self.batch_size)[0]
        return F.normalize(h.float(), dim=-1)

    def fit(self, splits: ATVSplits, suite: Any = None) -> dict[str, Any]:
        info = super().fit(splits)
        self.library = self.represent(splits.train)
        self.library_tasks = [p.task for p in splits.train]
        dev_keys = self.vector_keys(splits.dev)
        acc = float(np.mean([k == p.task for k, p in zip(dev_keys, splits.dev, strict=True)]))
        return {**info, "retrieval_layer": self.layer(), "library_queries": len(self.library),
                "dev_retrieval_accuracy": acc}  # fmt: skip

    @torch.no_grad()
    def vector_keys(self, prompts: Sequence[ICLPrompt]) -> list[str]:
        """The task each prompt's ``retrieval_k`` nearest stored queries vote for (votes
        weighted by cosine similarity)."""
        names = sorted(set(self.library_tasks))
        col = torch.tensor([names.index(t) for t in self.library_tasks])
        sims = self.represent(prompts) @ self.library.T.to(self.target.device)
        k = min(self.options.retrieval_k, sims.shape[1])
        top, idx = sims.topk(k, dim=-1)
        votes = torch.zeros(len(prompts), len(names))
        votes.scatter_add_(1, col[idx.cpu()], top.cpu().clamp(min=0) + 1e-6)
        keys = [names[int(i)] for i in votes.argmax(-1)]
        self.last_keys = keys
        return keys

    def retrieval_report(self, prompts: Sequence[ICLPrompt]) -> dict[str, Any]:
        """Which library task each task's test queries retrieved (share per task)."""
        keys = self.vector_keys(prompts)
        out: dict[str, dict[str, float]] = {}
        for p, k in zip(prompts, keys, strict=True):
            out.setdefault(p.task, {}).setdefault(k, 0.0)
            out[p.task][k] += 1
        for t, row in out.items():
            n = sum(row.values())
            out[t] = {k: round(v / n, 3) for k, v in sorted(row.items(), key=lambda x: -x[1])}
        return out
