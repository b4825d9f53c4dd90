"""Function vectors (Todd et al. 2023): heads ranked by average indirect effect (AIE), and the
sum of the top heads' mean outputs written into the residual stream.

AIE of head (l, h): on prompts whose demonstration labels are shuffled, replace the head's
last-token output (``hook_z``) by its mean over clean prompts; AIE is the gain in probability
of the correct answer's first token, averaged over prompts. All heads are measured by
:func:`tvlens.patching.patch` (causal mediation over heads): the prefix runs once and each
head's patch recomputes only the last token from its own layer on, many heads per pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from tvlens.errors import ConfigError
from tvlens.extraction.defaults import FV_K, FV_TOP_K_HEADS
from tvlens.extraction.residual import activations_at_positions
from tvlens.extraction.vectors import TaskVector
from tvlens.frames import tidy
from tvlens.models.tvmodel import TVModel
from tvlens.names import renamed
from tvlens.patching import AnswerProb, patch
from tvlens.plotting import plot_head_aie
from tvlens.results import Result
from tvlens.runs.config import MAX_BATCH
from tvlens.tasks.core import Task
from tvlens.tasks.prompts import (
    PromptBatch,
    PromptTemplate,
    sample_prompts,
    shuffled_label_variants,
    tokenize_prompts,
)


@dataclass
class HeadTable(Result):
    """AIE of every head, ``aie[layer, head]``, and the ranking."""

    aie: Float[Tensor, "layer head"]
    task: str

    def ranked(self) -> list[tuple[int, int, float]]:
        """``(layer, head, aie)`` from the largest AIE down."""
        n_heads = self.aie.shape[1]
        order = torch.argsort(self.aie.flatten(), descending=True)
        return [(int(i) // n_heads, int(i) % n_heads, float(self.aie.flatten()[i])) for i in order]

    def top(self, k: int) -> list[tuple[int, int]]:
        return [(layer, head) for layer, head, _ in self.ranked()[:k]]

    def plot(self, **kwargs):

        return plot_head_aie(self.aie, **kwargs)

    def to_dict(self) -> dict:
        return {"task": self.task, "aie": self.aie.tolist()}

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy: one row per head (``layer``, ``head``, ``aie``, ``rank``: 1 = largest AIE)."""
        frame = tidy({"aie": self.aie}, ("layer", "head"))
        frame["rank"] = frame["aie"].rank(ascending=False, method="first").astype("int64")
        frame["task"] = self.task
        return frame

    def to_rows(self) -> list[dict]:
        return [
            {"rank": r + 1, "layer": layer, "head": head, "aie": aie}
            for r, (layer, head, aie) in enumerate(self.ranked())
        ]


@torch.no_grad()
def mean_head_outputs(model: TVModel, batch: PromptBatch) -> Float[Tensor, "layer head d_head"]:
    """Mean over prompts of every head's ``hook_z`` at the query position, in one pass."""
    names = [model.z_hook(x) for x in range(model.n_layers)]
    acts = activations_at_positions(model, batch, names)
    return torch.stack([acts[n].mean(0) for n in names])


@torch.no_grad()
def head_aie(
    model: TVModel,
    corrupted: PromptBatch,
    head_means: Float[Tensor, "layer head d_head"],
    max_batch: int = MAX_BATCH,
    progress: bool = True,
) -> Float[Tensor, "layer head"]:
    """AIE of every head on ``corrupted`` (left-padded) prompts, patching each head's last-token
    ``hook_z`` to ``head_means[layer, head]``. ``max_batch`` bounds prompts × copies per pass.

    One call of :func:`tvlens.patching.patch` (heads, last position, mean source, answer
    probability): the prefix runs once and each head's copy recomputes one token from its layer.
    """
    source = {model.z_hook(layer): head_means[layer] for layer in range(model.n_layers)}
    result = patch(
        model,
        None,
        corrupted,
        AnswerProb(corrupted.answer_first),
        "heads",
        "last",
        source=source,
        max_batch=max_batch,
        progress=progress,
    )
    return result.effect()


@torch.no_grad()
def sum_head_outputs(
    model: TVModel, means: Float[Tensor, "layer head d_head"], heads: Sequence[tuple[int, int]]
) -> Float[Tensor, " d_model"]:
    """Todd et al.'s function vector from its heads: the sum over ``heads`` (``(layer,
    head)``, in order) of each head's mean output ``means[layer, head] @ W_O[layer, head]``
    (no bias)."""
    fv = torch.zeros(model.d_model, device=means.device, dtype=means.dtype)
    for layer, head in heads:
        fv += model.head_outputs(means[layer], layer)[head]
    return fv


def function_vector(
    model: TVModel,
    task: Task,
    k: int = FV_K,
    n_prompts: int = 32,
    top_k_heads: int = FV_TOP_K_HEADS,
    seed: int = 0,
    template: str | PromptTemplate | None = None,
    max_batch: int = MAX_BATCH,
    answer_token: Literal["only", "first"] = "only",
    progress: bool = True,
    *,
    top_k: int | None = None,
) -> tuple[TaskVector, HeadTable]:
    """The function vector of ``task`` and the table of heads by AIE.

    The vector is ``sum over the top_k_heads heads of head_means[l, h] @ W_O[l, h]`` (no
    bias); its ``layers`` holds the default injection layer ``n_layers // 3`` (choose it with
    a sweep). ``top_k`` is the old name of ``top_k_heads`` (deprecated).

    ``answer_token``: the AIE is the probability of the answer's token; ``"only"`` refuses
    answers of several tokens, ``"first"`` reads their first token, as Todd et al. (2023) do
    for multi-token answers (and as first-token accuracy scores them).
    """
    if answer_token not in ("only", "first"):
        raise ConfigError(f"answer_token must be 'only' or 'first', got {answer_token!r}.")

    top_k = renamed("top_k", top_k, "top_k_heads", top_k_heads, default=FV_TOP_K_HEADS)
    if top_k < 1:
        raise ConfigError(
            f"top_k_heads must be >= 1 (the number of heads summed into the function vector), got "
            f"{top_k}."
        )
    tmpl = model.template(template)
    prompts = sample_prompts(task, k, n_prompts, seed=seed, template=tmpl)
    clean = tokenize_prompts(prompts, model, padding_side="left")
    if answer_token == "only":
        clean.require_single_token()  # AIE is the probability of the answer's (only) token
    corrupted = tokenize_prompts(
        shuffled_label_variants(prompts, seed=seed + 1), model, padding_side="left"
    )
    means = mean_head_outputs(model, clean)
    table = HeadTable(
        head_aie(model, corrupted, means, max_batch=max_batch, progress=progress), task.name
    )
    top = table.top(min(top_k, model.n_layers * model.n_heads))
    fv = sum_head_outputs(model, means, top)
    tv = TaskVector(
        vectors=fv[None],
        layers=(model.n_layers // 3,),
        model_name=model.spec.name,
        revision=model.spec.revision,
        task=task.name,
        method="fv",
        n_prompts=n_prompts,
        info={"k": k, "top_k": top_k, "heads": [list(x) for x in top], "seed": seed},
    )
    return tv, table
