"""Layer sweeps: accuracy of zero-shot prompts plus a vector at each layer.

All layers are measured from one prefix run: the vector is written at the last token only,
so each layer's copy recomputes just that token (:mod:`tvlens.patching.last_token`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from tvlens.errors import PromptError
from tvlens.extraction.vectors import VectorMismatchError
from tvlens.injection.inject import Mode
from tvlens.models.loading import TVModel
from tvlens.patching.last_token import chunks, last_token_logits, run_prefix
from tvlens.tasks.prompts import ICLPrompt, tokenize_prompts


@torch.no_grad()
def layer_sweep_logits(
    model: TVModel,
    prompts: Sequence[ICLPrompt],
    vectors: Float[Tensor, "n d_model"],
    layers: Sequence[int],
    mode: Mode = "replace",
    scale: float = 1.0,
    max_batch: int = 1024,
) -> Float[Tensor, "batch n d_vocab"]:
    """Last-token logits of ``prompts`` with ``vectors[i]`` written at the last token after
    block ``layers[i]`` (``replace`` or ``add`` with ``scale``), for every ``i``."""
    if len(vectors) != len(layers):
        raise VectorMismatchError(f"{len(vectors)} vectors for {len(layers)} layers.")
    if vectors.shape[-1] != model.d_model:
        raise VectorMismatchError(
            f"vectors have size {vectors.shape[-1]}, but {model.name} has d_model={model.d_model}."
        )
    if mode not in ("replace", "add"):
        raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}.")
    layers = [model.check_layer(x) for x in layers]
    batch = tokenize_prompts(prompts, model, padding_side="left")
    if batch.tokens.shape[1] < 2:
        raise PromptError("Prompts need at least 2 tokens for a layer sweep.")
    state = run_prefix(model, batch)
    vecs = vectors.to(model.device, model.dtype)
    out = []
    for part in chunks(len(layers), max(1, max_batch // len(batch))):
        by_layer: dict[int, list[int]] = {}
        for c, i in enumerate(part):
            by_layer.setdefault(layers[i], []).append(c)

        def make(copies: list[int], idx: list[int]):
            cs = torch.tensor(copies)
            v = vecs[idx]

            def patch(act: Tensor) -> Tensor:  # [batch, copies, 1, d_model]
                if mode == "replace":
                    act[:, cs, 0] = v.to(act.dtype)
                else:
                    act[:, cs, 0] = act[:, cs, 0] + scale * v.to(act.dtype)
                return act

            return patch

        patches = []
        for layer, copies in by_layer.items():
            idx = [part[c] for c in copies]
            patches.append((model.resid_hook(layer, "post"), make(copies, idx)))
        out.append(last_token_logits(model, state, copies=len(part), patches=patches))
    return torch.cat(out, dim=1)


def layer_sweep_correct(
    model: TVModel,
    prompts: Sequence[ICLPrompt],
    vectors: Float[Tensor, "n d_model"],
    layers: Sequence[int],
    mode: Mode = "replace",
    scale: float = 1.0,
    max_batch: int = 1024,
) -> Bool[Tensor, "batch n"]:
    """Whether the first answer token is the argmax, per prompt and per swept layer."""
    logits = layer_sweep_logits(model, prompts, vectors, layers, mode, scale, max_batch)
    batch_answers = tokenize_prompts(prompts, model, padding_side="left").answer_first
    return logits.argmax(-1).cpu() == batch_answers.cpu()[:, None]
