"""Layer sweeps: accuracy of zero-shot prompts plus a vector at each layer.

All layers are measured from one prefix run: the vector is written at the last token only,
so each layer's copy recomputes just that token (:mod:`tvlens.patching.last_token`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tvlens.extraction.vectors import VectorMismatchError
from tvlens.injection.inject import Mode, check_mode, write_vector
from tvlens.models.tvmodel import TVModel
from tvlens.patching.last_token import run_prefix, sweep_components
from tvlens.runs.config import MAX_BATCH
from tvlens.tasks.prompts import ICLPrompt, PromptBatch, tokenize_prompts


@torch.no_grad()
def layer_sweep_logits(
    model: TVModel,
    prompts: Sequence[ICLPrompt],
    vectors: Float[Tensor, "n d_model"],
    layers: Sequence[int],
    mode: Mode = "replace",
    scale: float = 1.0,
    max_batch: int = MAX_BATCH,
) -> Float[Tensor, "batch n d_vocab"]:
    """Last-token logits of ``prompts`` with ``vectors[i]`` written at the last token after
    block ``layers[i]`` (``replace`` or ``add`` with ``scale``), for every ``i``."""
    batch = tokenize_prompts(prompts, model, padding_side="left")
    return _sweep(model, batch, vectors, layers, mode, scale, max_batch)


def _sweep(
    model: TVModel,
    batch: PromptBatch,
    vectors: Tensor,
    layers: Sequence[int],
    mode: Mode,
    scale: float,
    max_batch: int,
) -> Tensor:
    if len(vectors) != len(layers):
        raise VectorMismatchError(f"{len(vectors)} vectors for {len(layers)} layers.")
    if vectors.shape[-1] != model.d_model:
        raise VectorMismatchError(
            f"vectors have size {vectors.shape[-1]}, but {model.name} has d_model={model.d_model}."
        )
    check_mode(mode)
    layers = [model.check_layer(x) for x in layers]
    state = run_prefix(model, batch)
    vecs = vectors.to(model.device, model.dtype)

    def write(act: Tensor, cs: Tensor, idx: list[int]) -> Tensor:  # [batch, copies, 1, d]
        act[:, cs, 0] = write_vector(act[:, cs, 0], vecs[idx], mode, scale)
        return act

    names = [model.resid_hook(layer, "post") for layer in layers]
    return sweep_components(model, state, names, write, max_batch)


def layer_sweep_correct(
    model: TVModel,
    prompts: Sequence[ICLPrompt],
    vectors: Float[Tensor, "n d_model"],
    layers: Sequence[int],
    mode: Mode = "replace",
    scale: float = 1.0,
    max_batch: int = MAX_BATCH,
    answer_token: Literal["only", "first"] = "only",
) -> Bool[Tensor, "batch n"]:
    """Whether the answer token is the argmax, per prompt and per swept layer.

    ``answer_token``: ``"only"`` refuses answers of several tokens (one argmax cannot score
    them); ``"first"`` scores their first token (Hendel et al. 2023; Todd et al. 2023)."""
    batch = tokenize_prompts(prompts, model, padding_side="left")
    batch.require_answer_token(answer_token)
    logits = _sweep(model, batch, vectors, layers, mode, scale, max_batch)
    return logits.argmax(-1).cpu() == batch.answer_first.cpu()[:, None]


def best_on_dev(dev_correct: Bool[Tensor, "batch n"]) -> tuple[int, Float[Tensor, " n"]]:
    """The choice (a column: a layer, or a method's hyper-parameters) with the best dev
    accuracy, the first among ties, and the dev accuracy of every choice: the one rule by
    which the task-vector report and the comparison choose on dev queries (never on test)."""
    acc = dev_correct.float().mean(0)
    return int(torch.argmax(acc)), acc
