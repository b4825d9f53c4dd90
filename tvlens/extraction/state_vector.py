"""State vectors (Li, Wang, Wang, Zhao et al., "In-Context Learning State Vector with Inner and
Momentum Optimization", NeurIPS 2024; official code HITsz-TMG/ICL-State-Vector).

What the official code does, and what this module mirrors:

- **State.** The input of each attention output projection (``o_proj``: the heads' outputs
  ``z`` concatenated, before ``W_O``) at the separator token of every demonstration and of the
  (dummy) query of a k-shot prompt, in the first ``L + 1`` layers; averaged over prompts.
  tvlens reads ``hook_z`` at the last token before each answer (the separator's last token).
- **Inner optimisation** (``optimizer="inner"``, their ``fixed`` optimiser with ``beta=[1]*7``):
  the mean of the last 7 states (the last 6 demonstrations' and the query's).
- **Momentum optimisation** (``optimizer="momentum"``, their default ``fix-one-step`` with
  ``weight=[1, 2, 4, 8, 16, 0]``, ``lr=1``): start from the inner average ``s̄``; treat the
  differences of successive states as gradients, ``g_i = s_i - s_{i-1}`` over the last six
  entries of ``[s_1 .. s_k, s̄]``, and step ``s̄ + lr * Σ w_i g_i / Σ w_i``.
- **Divide-and-conquer aggregation** (``groups > 0``; their ``aggregation.py``): split
  ``groups × k`` demonstrations into groups of ``k``; each group's state is its query state
  averaged over ``shuffles`` orders of the group; then a prompt with one demonstration per
  group has each group state written at that demonstration's separator (every state layer at
  once) and the state read at its query is the aggregate (averaged over ``n_prompts`` queries).
- **Injection** (``intervention_mode='add#0#1'``, ``add_to='atten'``): at the query's separator
  of the zero-shot prompt, in layers ``0..L``, the attention output is *replaced* by the
  state's attention output (``state @ W_O``): the ``o_proj`` output, before any norm the block
  applies after attention (Gemma-2, OLMo-2), so tvlens writes at ``attn_module``.

Deviations (see docs/guides/methods_state_ltv.md): the official code reads and writes every
token of a multi-token separator (``→``); tvlens the last one (one position per example). On a
model with an output bias (GPT-2, Pythia) tvlens writes ``state @ W_O + b_O`` (replacing
``o_proj``'s input, as the official aggregation does); the official ``replace`` of the output
drops the bias (its models, Llama-2 and GPT-J, have none). With fewer demonstrations than
the window (k < 6) the official index arithmetic wraps around; tvlens uses the states there
are. The official layer ``L`` is chosen per task on a dev set (e.g. 12-14 of Llama-2's 32):
tvlens defaults to ``0.4 * n_layers`` and the harness tunes it on dev queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvlens.errors import ConfigError, PromptError
from tvlens.extraction import defaults as D
from tvlens.extraction.writes import Intervention, Write
from tvlens.models.tvmodel import TVModel
from tvlens.runs.config import MAX_BATCH
from tvlens.tasks.core import Task
from tvlens.tasks.prompts import (
    ICLPrompt,
    PromptBatch,
    PromptTemplate,
    get_template,
    sample_prompts,
    tokenize_prompts,
)

OPTIMIZERS = ("none", "inner", "momentum")
# The official defaults (state_vector_optimize.py: beta=[1]*7, weight=[1,2,4,8,16,0], lr=1),
# written in tvlens.extraction.defaults with the StateVector method's other options.
INNER_WINDOW = D.SV_INNER_WINDOW
MOMENTUM_WEIGHTS = D.SV_MOMENTUM_WEIGHTS


# ---------------------------------------------------------------------------- positions


def separator_positions(model: TVModel, batch: PromptBatch) -> Int[Tensor, "batch example"]:
    """For each (left-padded) row: the position of the last token before each demonstration's
    answer, then the query position (``k + 1`` columns; all prompts have the same ``k``).

    Found by tokenizing each prefix ``demos[:r] + query-form of demo r``; a prefix that does
    not tokenize as the start of the whole prompt raises :class:`PromptError`."""
    ks = {p.k for p in batch.prompts}
    if len(ks) != 1:
        raise PromptError(
            f"State vectors need prompts with one number of demonstrations, got {ks}."
        )
    width = batch.tokens.shape[1]
    rows = []
    for i, p in enumerate(batch.prompts):
        n = int(batch.attention_mask[i].sum())
        pad = width - n
        full = batch.tokens[i, pad:].tolist()
        pos = []
        for r in range(p.k):
            prefix = p.template.render(p.demonstrations[:r], p.demonstrations[r])
            ids = model.to_tokens(prefix)[0].tolist()
            if full[: len(ids)] != ids:
                raise PromptError(
                    f"The prompt prefix {prefix[-40:]!r} does not tokenize as the start of the "
                    "whole prompt, so its separator position is unknown: use a template whose "
                    "answer starts a new token (e.g. 'arrow' or 'qa')."
                )
            pos.append(pad + len(ids) - 1)
        pos.append(int(batch.query_pos[i]))
        rows.append(pos)
    return torch.tensor(rows, dtype=torch.long, device=batch.tokens.device)


# ---------------------------------------------------------------------------- states


@torch.no_grad()
def read_states(
    model: TVModel,
    batch: PromptBatch,
    positions: Int[Tensor, "batch n"],
    n_layers: int | None = None,
    write: Float[Tensor, "batch m layer head d_head"] | None = None,
    write_positions: Int[Tensor, "batch m"] | None = None,
) -> Float[Tensor, "batch n layer head d_head"]:
    """``hook_z`` (the input of ``o_proj``, split by head) at ``positions`` of every row, in
    layers ``0..n_layers-1`` (default all), from one forward pass.

    With ``write``, the states ``write[:, j, l]`` first replace ``hook_z`` at
    ``write_positions[:, j]`` in every layer ``l`` read (the aggregation step); the hooks are
    removed on exit, also on error."""
    n_layers = model.n_layers if n_layers is None else n_layers
    rows = torch.arange(len(batch), device=batch.tokens.device)[:, None]
    out: dict[int, Tensor] = {}

    def hook(layer: int):
        def fn(z: Tensor, hook: Any = None) -> Tensor:
            if write is not None:
                z = z.clone()
                z[rows, write_positions] = write[:, :, layer].to(z.dtype)
            out[layer] = z[rows, positions].detach().clone()
            return z

        return fn

    hooks = [(model.z_hook(layer), hook(layer)) for layer in range(n_layers)]
    with model.hooks(fwd_hooks=hooks):
        stop = n_layers if n_layers < model.n_layers else None
        model.bridge(batch.tokens, attention_mask=batch.attention_mask, stop_at_layer=stop)
    return torch.stack([out[layer] for layer in range(n_layers)], dim=2)


def inner_optimize(
    states: Float[Tensor, "example layer head d_head"], window: int = INNER_WINDOW
) -> Float[Tensor, "layer head d_head"]:
    """Inner optimisation: the mean of the last ``window`` states (demonstrations', then the
    query's; the official ``fixed`` optimiser with ``beta=[1]*window``)."""
    if window < 1:
        raise ConfigError(f"inner_window must be >= 1, got {window}.")
    return states[-min(window, states.shape[0]) :].mean(0)


def momentum_optimize(
    states: Float[Tensor, "example layer head d_head"],
    weights: Sequence[float] = MOMENTUM_WEIGHTS,
    lr: float = D.SV_MOMENTUM_LR,
    window: int = INNER_WINDOW,
) -> Float[Tensor, "layer head d_head"]:
    """Momentum optimisation (the official ``fix-one-step``): ``s̄`` = the inner average; the
    differences of successive entries of ``[s_1 .. s_k, s̄]`` (``s_i`` the demonstrations'
    states) are gradients, the last ``len(weights)`` of them weighted by ``weights``:
    ``s̄ + lr * Σ_x weights[x] * g_x / Σ weights``. With fewer differences than weights
    (k < len(weights)) the last weights are used."""
    if not weights or sum(weights) == 0:
        raise ConfigError(f"momentum_weights must be non-empty with a non-zero sum, got {weights}.")
    avg = inner_optimize(states, window)
    seq = torch.cat([states[:-1], avg[None]])  # the query's state replaced by the average
    n = min(len(weights), seq.shape[0] - 1)
    w = list(weights)[-n:] if n else []
    if sum(w) == 0:  # one demonstration: its only difference has weight 0
        return avg
    delta = torch.zeros_like(avg)
    for x, i in enumerate(range(seq.shape[0] - n, seq.shape[0])):
        delta = delta + (seq[i] - seq[i - 1]) * (w[x] / sum(w))
    return avg + lr * delta


def optimize_states(
    states: Float[Tensor, "example layer head d_head"],
    optimizer: str = D.SV_OPTIMIZER,
    window: int = INNER_WINDOW,
    weights: Sequence[float] = MOMENTUM_WEIGHTS,
    lr: float = D.SV_MOMENTUM_LR,
) -> Float[Tensor, "layer head d_head"]:
    """The state vector from the states of ``k`` demonstrations and the query (last row)."""
    if optimizer == "none":
        return states[-1]
    if optimizer == "inner":
        return inner_optimize(states, window)
    if optimizer == "momentum":
        return momentum_optimize(states, weights, lr, window)
    raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}.")


def mean_states(
    model: TVModel,
    prompts: Sequence[ICLPrompt],
    n_layers: int | None = None,
    max_batch: int = MAX_BATCH,
) -> Float[Tensor, "example layer head d_head"]:
    """The states at every demonstration's separator and at the query, averaged over prompts
    (in forward passes of at most ``max_batch`` prompts)."""
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}.")
    prompts = list(prompts)
    total = None
    for start in range(0, len(prompts), max_batch):
        batch = tokenize_prompts(prompts[start : start + max_batch], model, padding_side="left")
        part = read_states(model, batch, separator_positions(model, batch), n_layers).sum(0)
        total = part if total is None else total + part
    return total / len(prompts)


# ---------------------------------------------------------------------------- aggregation


def aggregate_states(
    model: TVModel,
    task: Task,
    k: int,
    groups: int,
    n_prompts: int,
    shuffles: int = D.SV_SHUFFLES,
    seed: int = 0,
    template: str | PromptTemplate = "arrow",
) -> Float[Tensor, "layer head d_head"]:
    """Divide-and-conquer aggregation of ``groups × k`` demonstrations (the official
    ``aggregation.py``, zero-shot branch).

    Group ``g``'s state: the query state of prompts holding group ``g``'s demonstrations in
    ``shuffles`` orders (one dummy query per group). Then ``n_prompts`` prompts with one
    demonstration per group and a dummy query: each group state replaces ``hook_z`` at its
    demonstration's separator in every layer, and the state read at the query (with those
    writes in place) is the aggregate, averaged over the prompts."""
    tmpl = get_template(template)
    rng = np.random.default_rng(seed)
    need = groups * k + groups + n_prompts
    if len(task) < need:
        raise PromptError(
            f"Aggregating {groups} groups of k={k} with {n_prompts} prompts needs {need} "
            f"examples of task {task.name!r}, which has {len(task)}: use fewer groups or a "
            "larger task."
        )
    order = [task.examples[int(i)] for i in rng.permutation(len(task))]
    demos, rest = order[: groups * k], order[groups * k :]
    agg_demos, dummies = rest[:groups], rest[groups : groups + n_prompts]
    group_states = []
    for g in range(groups):
        group = demos[g * k : (g + 1) * k]
        prompts = []
        for _ in range(shuffles):
            shuffled = tuple(group[int(i)] for i in rng.permutation(k))
            prompts.append(ICLPrompt(task.name, shuffled, agg_demos[g], tmpl))
        group_states.append(mean_states(model, prompts)[-1])
    states = torch.stack(group_states)  # [group layer head d_head]
    prompts = [ICLPrompt(task.name, tuple(agg_demos), q, tmpl) for q in dummies]
    batch = tokenize_prompts(prompts, model, padding_side="left")
    pos = separator_positions(model, batch)
    write = states[None].expand(len(batch), *states.shape)
    read = read_states(model, batch, pos[:, -1:], write=write, write_positions=pos[:, :-1])
    return read[:, 0].mean(0)


# ---------------------------------------------------------------------------- result


@dataclass(frozen=True)
class StateVectorResult:
    """A state vector: per layer, the optimised state (``hook_z``) and what it writes.

    ``outputs[l] = Σ_h state[l, h] @ W_O[l, h] + b_O[l]`` is the attention output that
    replaces layer ``l``'s at the query, for ``l`` in ``0..layer``."""

    state: Float[Tensor, "layer head d_head"]
    outputs: Float[Tensor, "layer d_model"]
    states: Float[Tensor, "example layer head d_head"] | None
    layer: int
    task: str
    model_name: str
    optimizer: str
    info: dict = field(default_factory=dict)

    def intervention(self, layer: int | None = None, scale: float | None = None) -> Intervention:
        """Replace the attention output at the query in layers ``0..layer`` (default: the
        result's ``layer``). ``scale`` is not used (the method replaces)."""
        last = self.layer if layer is None else int(layer)
        if not 0 <= last < self.outputs.shape[0]:
            raise ConfigError(
                f"layer {last} is out of range: state vectors write layers 0..layer with layer "
                f"in 0..{self.outputs.shape[0] - 1}."
            )
        writes = tuple(
            Write(x, self.outputs[x], point="attn_module", op="replace", positions="last")
            for x in range(last + 1)
        )
        return Intervention(writes, method="state_vector")

    def to_dict(self) -> dict:
        return {"task": self.task, "model": self.model_name, "layer": self.layer,
                "optimizer": self.optimizer, **self.info}  # fmt: skip


def state_outputs(
    model: TVModel, state: Float[Tensor, "layer head d_head"]
) -> Float[Tensor, "layer d_model"]:
    """Each layer's state through its output projection, with the bias."""
    with torch.no_grad():
        return torch.stack(
            [model.head_outputs(state[x], x).sum(0) + model.b_O(x) for x in range(state.shape[0])]
        )


def state_vector(
    model: TVModel,
    task: Task,
    k: int = 10,
    n_prompts: int = 1,
    seed: int = 0,
    template: str | PromptTemplate | None = None,
    optimizer: str = D.SV_OPTIMIZER,  # the StateVector method's options (defaults.py)
    layer: int | None = None,
    inner_window: int = INNER_WINDOW,
    momentum_weights: Sequence[float] = MOMENTUM_WEIGHTS,
    momentum_lr: float = D.SV_MOMENTUM_LR,
    groups: int = D.SV_GROUPS,
    shuffles: int = D.SV_SHUFFLES,
    max_batch: int = MAX_BATCH,
) -> StateVectorResult:
    """The state vector of ``task`` (Li et al. 2024) from ``n_prompts`` k-shot prompts whose
    queries are dummy queries (pass the train split as ``task``); with ``groups > 0``, the
    divide-and-conquer aggregate of ``groups × k`` demonstrations instead (no optimiser).
    States are kept for every layer, so the last written layer can be chosen afterwards
    (``result.intervention(layer=...)``)."""
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}.")
    if k < 1:
        raise ConfigError(f"State vectors need k >= 1 demonstrations, got {k}.")
    tmpl = model.template(template)
    default_layer = max(0, int(0.4 * model.n_layers) - 1) if layer is None else layer
    default_layer = model.check_layer(default_layer)
    if groups > 0:
        state = aggregate_states(model, task, k, groups, n_prompts, shuffles, seed, tmpl)
        states = None
        optimizer = "aggregate"
    else:
        prompts = sample_prompts(task, k, n_prompts, seed=seed, template=tmpl)
        states = mean_states(model, prompts, max_batch=max_batch)
        state = optimize_states(states, optimizer, inner_window, momentum_weights, momentum_lr)
    info = {"k": k, "n_prompts": n_prompts, "seed": seed, "groups": groups}
    return StateVectorResult(state, state_outputs(model, state), states, default_layer,
                             task.name, model.spec.name, optimizer, info)  # fmt: skip


__all__ = [
    "StateVectorResult",
    "aggregate_states",
    "inner_optimize",
    "mean_states",
    "momentum_optimize",
    "optimize_states",
    "read_states",
    "separator_positions",
    "state_vector",
]
