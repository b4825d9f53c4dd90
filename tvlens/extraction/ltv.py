"""Learned task vectors, LTV (Saglam et al., "Learning Task Representations from In-Context
Learning", ACL Findings 2025; official code baturaysaglam/ICL-Task-Representations).

What the official code does (``language/src/train_LTV.py`` and ``LTV_utils``), and what this
module mirrors:

- **Basis.** Every head's mean output at the last token of clean k-shot prompts (Todd et al.'s
  mean head activations, k=10, 100 prompts: :func:`tvlens.extraction.function_vectors.
  mean_head_outputs`), through the output projection.
- **Vector.** Weights ``w[layer, head]`` (initialised ``randn`` under the seed) combine them
  per layer: ``v_l = Σ_h w[l, h] · a[l, h]``. ``v_l`` is **added to the output of every
  block** (the residual after layer ``l``) at the last token, scale 1.
- **Training.** Frozen model; cross-entropy of the first answer token at the last position of
  prompts with ``n_examples=5`` demonstrations whose labels are **shuffled** (so the vector,
  not the demonstrations, must carry the task), ``sgd_batch_size=32`` prompts a step, Adam
  with ``lr=5e-5`` for up to 100,000 steps; the weights kept are those saved after the step
  whose batch loss was the lowest.

``combine`` says what ``a[l, h]`` is. ``"heads"`` (default): head ``h``'s own output
``z_h W_O[h] + b_O`` (``o_proj`` applied to the mean ``z`` with the other heads zeroed), the
weighted sum of heads of the paper and of the official synthetic-task code. ``"blocks"``: the
official language code's literal ``get_attn_out``, which applies ``o_proj`` to all heads'
mean ``z`` together and splits the *resulting* ``d_model`` vector into ``n_heads`` blocks of
``d_head`` coordinates, block ``h`` scaled by ``w[l, h]``.

Deviations (docs/guides/methods_state_ltv.md): the mean head outputs are computed once from
``n_prompts`` prompts, where the official loop draws 100 new prompts every step; training
queries come from the task given (the train split), where the official code draws them from
the test split; the CPU defaults are ``steps=100``, ``batch_size=16``, ``lr=0.1`` (the paper's
5e-5 moves the weights by ~0.005 in 100 steps; on SmolLM2-135M, zero-shot objective, 1e-2
took the loss from 10.5 to 4.8 in 40 steps and 0.1 to 0.44 in 60), all options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from tvlens.errors import ConfigError
from tvlens.extraction import defaults as D
from tvlens.extraction.function_vectors import mean_head_outputs
from tvlens.extraction.writes import Intervention, Write, apply_intervention
from tvlens.models.tvmodel import TVModel
from tvlens.runs.config import MAX_BATCH
from tvlens.tasks.core import Task
from tvlens.tasks.prompts import (
    ICLPrompt,
    PromptBatch,
    PromptTemplate,
    sample_prompts,
    shuffled_label_variants,
    tokenize_prompts,
)

COMBINE = ("heads", "blocks")
TRAIN_ON = ("shuffled", "zero_shot")
# The official defaults (train_LTV.py): n_examples=5, sgd_batch_size=32, lr=5e-5, n_iter=1e5.
PAPER = {"train_k": D.LTV_TRAIN_K, "batch_size": 32, "lr": 5e-5, "steps": 100_000}


def head_basis(
    model: TVModel, means: Float[Tensor, "layer head d_head"], combine: str = D.LTV_COMBINE
) -> Float[Tensor, "layer head d_model"]:
    """What the weights combine: ``basis[l, h]`` (see the module docstring for ``combine``)."""
    if combine not in COMBINE:
        raise ConfigError(f"combine must be one of {COMBINE}, got {combine!r}.")
    out = []
    with torch.no_grad():
        for layer in range(model.n_layers):
            heads = model.head_outputs(means[layer], layer)  # [head d_model], no bias
            bias = model.b_O(layer).to(heads.dtype)
            if combine == "heads":
                out.append(heads + bias)
                continue
            if model.n_heads * model.d_head != model.d_model:
                raise ConfigError(
                    f"combine='blocks' splits d_model={model.d_model} into {model.n_heads} "
                    f"blocks of d_head={model.d_head}, which {model.name} does not allow: use "
                    "combine='heads'."
                )
            total = (heads.sum(0) + bias).view(model.n_heads, model.d_head)
            blocks = torch.zeros(model.n_heads, model.n_heads, model.d_head, dtype=heads.dtype,
                                 device=heads.device)  # fmt: skip
            idx = torch.arange(model.n_heads)
            blocks[idx, idx] = total
            out.append(blocks.view(model.n_heads, model.d_model))
    return torch.stack(out)


def ltv_vectors(
    weights: Float[Tensor, "layer head"], basis: Float[Tensor, "layer head d_model"]
) -> Float[Tensor, "layer d_model"]:
    """``v_l = Σ_h w[l, h] · basis[l, h]`` (differentiable in ``weights``)."""
    return einops.einsum(weights.to(basis.dtype), basis, "l h, l h d -> l d")


def ltv_intervention(vectors: Float[Tensor, "layer d_model"], scale: float = 1.0) -> Intervention:
    """Add ``scale · v_l`` to the residual after every layer ``l``, at the last token."""
    writes = tuple(
        Write(x, vectors[x], point="resid_post", op="add", scale=scale, positions="last")
        for x in range(vectors.shape[0])
    )
    return Intervention(writes, method="ltv")


def training_prompts(
    task: Task,
    k: int,
    batch_size: int,
    seed: int,
    step: int,
    template: str | PromptTemplate = "arrow",
    train_on: str = D.LTV_TRAIN_ON,
) -> list[ICLPrompt]:
    """The prompts of training step ``step``: ``k`` demonstrations with shuffled labels and a
    query (``"shuffled"``, the official ``sample_data``), or the queries alone
    (``"zero_shot"``). Seeded by ``(seed, step)``."""
    if train_on not in TRAIN_ON:
        raise ConfigError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}.")
    step_seed = seed * 1_000_003 + step
    if train_on == "zero_shot":
        return sample_prompts(task, 0, batch_size, seed=step_seed, template=template)
    prompts = sample_prompts(task, k, batch_size, seed=step_seed, template=template)
    return shuffled_label_variants(prompts, seed=step_seed + 1)


def ltv_loss(
    model: TVModel,
    weights: Float[Tensor, "layer head"],
    basis: Float[Tensor, "layer head d_model"],
    batch: PromptBatch,
) -> Tensor:
    """Mean cross-entropy of each prompt's first answer token at the query (left-padded
    ``batch``) with the LTV added at every layer."""
    with apply_intervention(model, ltv_intervention(ltv_vectors(weights, basis))):
        logits = model(batch.tokens, attention_mask=batch.attention_mask)[:, -1]
    return F.cross_entropy(logits.float(), batch.answer_first)


@dataclass(frozen=True)
class LTVResult:
    """A learned task vector: the weights kept, the basis they combine, and the vectors."""

    weights: Float[Tensor, "layer head"]
    basis: Float[Tensor, "layer head d_model"]
    losses: tuple[float, ...]
    best_step: int
    last_weights: Float[Tensor, "layer head"]
    task: str
    model_name: str
    info: dict = field(default_factory=dict)

    @property
    def vectors(self) -> Float[Tensor, "layer d_model"]:
        return ltv_vectors(self.weights, self.basis).detach()

    def intervention(self, layer: int | None = None, scale: float | None = None) -> Intervention:
        """Add the vectors at every layer (``scale``, default 1 as in the paper). An LTV
        writes every layer, so ``layer`` must be left out."""
        if layer is not None:
            raise ConfigError(
                "An LTV is added at every layer (its weights were learned for all of them): "
                "leave out layer=."
            )
        return ltv_intervention(self.vectors, 1.0 if scale is None else float(scale))

    def to_dict(self) -> dict:
        return {"task": self.task, "model": self.model_name, "best_step": self.best_step,
                "losses": list(self.losses), **self.info}  # fmt: skip


def ltv(
    model: TVModel,
    task: Task,
    k: int = 10,
    n_prompts: int = 100,
    seed: int = 0,
    template: str | PromptTemplate | None = None,
    steps: int = D.LTV_STEPS,  # the LTV method's options (defaults.py)
    lr: float = D.LTV_LR,
    batch_size: int = D.LTV_BATCH_SIZE,
    train_k: int = D.LTV_TRAIN_K,
    train_on: str = D.LTV_TRAIN_ON,
    combine: str = D.LTV_COMBINE,
    progress: bool = False,
    max_batch: int = MAX_BATCH,
) -> LTVResult:
    """Learn the LTV of ``task`` (Saglam et al. 2025): the basis from ``n_prompts`` clean
    ``k``-shot prompts, then ``steps`` Adam steps on the weights (model frozen) over batches of
    ``batch_size`` training prompts. Pass the train split as ``task``."""
    if steps < 1 or batch_size < 1 or lr <= 0 or max_batch < 1:
        raise ConfigError(
            f"steps, batch_size, lr and max_batch must be positive, got {steps}, {batch_size}, "
            f"{lr}, {max_batch}."
        )
    if train_on == "shuffled" and train_k < 2:
        raise ConfigError(f"train_k must be >= 2 to shuffle labels, got {train_k}.")
    tmpl = model.template(template)
    clean = sample_prompts(task, k, n_prompts, seed=seed, template=tmpl)
    means = sum(
        mean_head_outputs(model, tokenize_prompts(clean[i : i + max_batch], model))
        * len(clean[i : i + max_batch])
        for i in range(0, len(clean), max_batch)
    ) / len(clean)
    basis = head_basis(model, means, combine)
    # The official code seeds torch and draws the weights first (LearnableTaskVector.__init__).
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(model.n_layers, model.n_heads, generator=gen).to(basis.device)
    weights.requires_grad_(True)
    opt = torch.optim.Adam([weights], lr=lr)
    losses: list[float] = []
    best, best_step, best_loss = weights.detach().clone(), -1, math.inf
    steps_iter = range(steps)
    if progress:
        from tqdm.auto import tqdm

        steps_iter = tqdm(steps_iter, desc=f"LTV {task.name}")
    for step in steps_iter:
        prompts = training_prompts(task, train_k, batch_size, seed, step, tmpl, train_on)
        batch = tokenize_prompts(prompts, model, padding_side="left")
        loss = ltv_loss(model, weights, basis, batch)
        (grad,) = torch.autograd.grad(loss, [weights])
        opt.zero_grad()
        weights.grad = grad
        opt.step()
        losses.append(float(loss.detach()))
        if losses[-1] < best_loss:  # saved after the step, as the official checkpoint is
            best, best_step, best_loss = weights.detach().clone(), step, losses[-1]
    info = {"k": k, "n_prompts": n_prompts, "seed": seed, "steps": steps, "lr": lr,
            "batch_size": batch_size, "train_k": train_k, "train_on": train_on,
            "combine": combine}  # fmt: skip
    return LTVResult(best, basis, tuple(losses), best_step, weights.detach().clone(),
                     task.name, model.spec.name, info)  # fmt: skip


__all__ = [
    "LTVResult",
    "head_basis",
    "ltv",
    "ltv_intervention",
    "ltv_loss",
    "ltv_vectors",
    "training_prompts",
]
