"""Residual-stream vectors at the query position, at every layer, in one forward pass.

Hooks keep only the query row of each activation (``act[i, query_pos[i]]``), so nothing of
size ``batch × pos × d_model`` is stored per layer, unlike ``run_with_cache``.
"""

from __future__ import annotations

from collections.abc import Sequence

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvlens.errors import ConfigError
from tvlens.extraction.vectors import TaskVector
from tvlens.models import adapter
from tvlens.models.tvmodel import ResidPoint, TVModel
from tvlens.tasks.core import Task
from tvlens.tasks.prompts import (
    PromptBatch,
    PromptTemplate,
    sample_prompts,
    tokenize_prompts,
)


@torch.no_grad()
def activations_at_positions(
    model: TVModel,
    batch: PromptBatch,
    hook_names: Sequence[str],
    positions: Int[Tensor, " batch"] | None = None,
) -> dict[str, Tensor]:
    """``{hook: act[i, positions[i]]}`` for every hook, from one forward pass.

    ``positions`` defaults to each row's query position. Only the selected rows are kept.
    The pass stops after the last block that holds a requested hook.
    """
    pos = batch.query_pos if positions is None else positions
    rows = torch.arange(len(batch), device=batch.tokens.device)
    out: dict[str, Tensor] = {}

    layers = [int(n.split(".")[1]) for n in hook_names if n.startswith("blocks.")]
    stop = max(layers) + 1 if layers and len(layers) == len(hook_names) else None
    if stop is not None and stop >= model.n_layers:
        stop = None  # the last block: a full pass (stop_at_layer adds its own overhead)
    with model.hooks(fwd_hooks=adapter.keepers(out, list(hook_names), lambda a: a[rows, pos])):
        model.bridge(batch.tokens, attention_mask=batch.attention_mask, stop_at_layer=stop)
    missing = [n for n in hook_names if n not in out]
    if missing:
        raise RuntimeError(f"Hooks {missing} did not fire on {model.name}.")
    return {n: out[n] for n in hook_names}


def residual_at_query(
    model: TVModel,
    batch: PromptBatch,
    layers: Sequence[int] | None = None,
    where: ResidPoint = "post",
    batch_size: int = 64,
) -> Float[Tensor, "layer batch d_model"]:
    """The residual stream at each row's query position, for ``layers`` (default: all)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    layers = model.check_layers(layers)
    names = [model.resid_hook(x, where) for x in layers]
    parts = []
    for start in range(0, len(batch), batch_size):
        sub = batch.select(range(start, min(start + batch_size, len(batch))))
        acts = activations_at_positions(model, sub, names)
        parts.append(torch.stack([acts[n] for n in names]))
    return torch.cat(parts, dim=1)


def per_query_vectors(
    model: TVModel,
    task: Task,
    k: int = 5,
    n_prompts: int = 64,
    seed: int = 0,
    template: str | PromptTemplate | None = None,
    layers: Sequence[int] | None = None,
    padding_side: str = "left",
) -> tuple[Float[Tensor, "layer prompt d_model"], list]:
    """One residual vector per prompt (and per layer) at the query position, with the
    prompts they came from."""
    prompts = sample_prompts(task, k, n_prompts, seed=seed, template=model.template(template))
    batch = tokenize_prompts(prompts, model, padding_side=padding_side)
    return residual_at_query(model, batch, layers), prompts


def hendel_task_vector(
    model: TVModel,
    task: Task,
    k: int = 5,
    n_prompts: int = 32,
    seed: int = 0,
    template: str | PromptTemplate | None = None,
    layers: Sequence[int] | None = None,
) -> TaskVector:
    """Hendel et al.'s task vector: the residual after each layer at the last token of ``k``-shot
    prompts, averaged over ``n_prompts`` prompts.

    The queries of these prompts are *dummy* queries: draw them from a split that excludes
    the test queries (pass the train split as ``task``).
    """
    acts, _ = per_query_vectors(model, task, k, n_prompts, seed, template, layers)
    layer_ids = tuple(model.check_layers(layers))
    return TaskVector(
        vectors=einops.reduce(acts, "layer prompt d -> layer d", "mean"),
        layers=layer_ids,
        model_name=model.spec.name,
        revision=model.spec.revision,
        task=task.name,
        method="hendel",
        n_prompts=n_prompts,
        info={"k": k, "seed": seed},
    )
