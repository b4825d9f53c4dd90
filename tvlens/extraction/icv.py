"""In-context vectors (ICV): Liu, Ye, Xing and Zou, "In-context Vectors: Making In Context
Learning More Effective and Controllable Through Latent Space Steering", ICML 2024
(arXiv:2311.06668; official code shengliu66/ICV).

What the official code does, and this module mirrors (``tasks/base.py: obtain_icv``,
``utils/llm_layers.py: ICVLayer``, ``utils/pca.py``):

1. For each demonstration ``(x, y)``, ``x`` and ``y`` are run *separately*, and the hidden
   state at the last token is read after the embedding and after every block: ``H(x)``,
   ``H(y)``, each ``[n_layers + 1, d_model]``.
2. The shifts ``ΔH = H(y) − H(x)`` are flattened over layers and a rank-1 PCA is fitted on
   them (centred, SVD, signs fixed from ``U`` as sklearn's old ``svd_flip``); the ICV is
   ``first component + mean shift``, reshaped per layer, the embedding row dropped.
3. At inference every block's *MLP output* (the MLP module's own output, at every position)
   is turned toward the layer's ICV and keeps its norm:
   ``h ← ‖h‖·normalize(ĥ + α·(1 + max(0, cos(h, −v)))·v̂)`` (``op="icv"`` of
   :mod:`tvlens.injection.intervention`).

Differences from the official code (see docs/guides/methods_icv_i2cl.md): prompts start
with the model's BOS policy (``TVModel.bos_for``), not the tokenizer's ``add_special_tokens``;
the official strip of punctuation from each demonstration (a clean-up of its paraphrase data)
is not done, since punctuation is the content of some tasks; the shifted output is returned
in the model's dtype (the official layer returns float16 always).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tvlens.errors import ConfigError
from tvlens.extraction import defaults as D
from tvlens.extraction.writes import Intervention, Write, apply_intervention
from tvlens.models.tvmodel import TVModel
from tvlens.tasks.core import Example, Task
from tvlens.tasks.prompts import PromptBatch, PromptTemplate, get_template

PAIRS = ("separate", "joined")
# α tried by :func:`tune_alpha` (the official README and notebook use 0.1 and 0.12): the ICV
# method's grid, written in tvlens.extraction.defaults.
ALPHAS = D.ICV_ALPHAS


def sample_demonstrations(task: Task, k: int, seed: int) -> list[Example]:
    """``k`` distinct examples of ``task`` in a seeded random order (the demonstrations)."""
    if k > len(task):
        raise ConfigError(
            f"k={k} demonstrations but task {task.name!r} has {len(task)} examples: use a "
            "smaller k or a larger task."
        )
    rng = np.random.default_rng(seed)
    return [task.examples[int(i)] for i in rng.choice(len(task), size=k, replace=False)]


def token_rows(model: TVModel, texts: Sequence[str]) -> list[list[int]]:
    """Each text's tokens as the model's prompts start (its BOS policy), unpadded."""
    bos = model.bos_for()
    rows = []
    for t in texts:
        ids = ([bos] if bos is not None else []) + list(
            model.tokenizer(t, add_special_tokens=False)["input_ids"]
        )
        if not ids:
            raise ConfigError(f"{t!r} has no tokens: a demonstration needs at least one.")
        rows.append(ids)
    return rows


@torch.no_grad()
def last_token_activations(
    model: TVModel, rows: Sequence[Sequence[int]], names: Sequence[str], batch_size: int = 64
) -> dict[str, Float[Tensor, "text d_model"]]:
    """``{hook: act[i, last token of row i]}`` for every hook, the rows right-padded in
    batches of ``batch_size`` (causal attention: padding after a row does not change it)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    pad = model.tokenizer.pad_token_id or 0
    parts: dict[str, list[Tensor]] = {n: [] for n in names}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(r) for r in chunk)
        tokens = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, r in enumerate(chunk):
            tokens[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
            mask[i, : len(r)] = 1
        last = torch.tensor([len(r) - 1 for r in chunk], device=model.device)
        idx = torch.arange(len(chunk), device=model.device)

        def keeper(name: str, idx: Tensor = idx, last: Tensor = last) -> Any:
            # Stored by the name asked for (``hook.name`` may be that of an alias's target).
            def keep(act: Tensor, hook: Any) -> None:
                parts[name].append(act[idx, last].detach().float())

            return keep

        with model.bridge.hooks(fwd_hooks=[(n, keeper(n)) for n in names]):
            model.bridge(tokens.to(model.device), attention_mask=mask.to(model.device))
    return {n: torch.cat(parts[n]) for n in names}


def pca_direction(
    shifts: Float[Tensor, "demo feature"], rank: int = D.ICV_RANK
) -> Float[Tensor, " feature"]:
    """The official ICV's PCA (``utils/pca.py`` and ``obtain_icv``): centre the shifts, SVD,
    make the largest-magnitude entry of each column of ``U`` positive, and return the sum of
    the first ``rank`` components plus the mean shift."""
    mean = shifts.mean(0, keepdim=True)
    u, _, vh = torch.linalg.svd(shifts - mean, full_matrices=False)
    cols = torch.arange(u.shape[1], device=u.device)
    signs = torch.sign(u[u.abs().argmax(0), cols])
    components = (vh * signs[:, None])[: min(rank, vh.shape[0])]
    return (components.sum(0, keepdim=True) + mean).mean(0)


@dataclass(frozen=True)
class ICVResult:
    """One ICV per layer and how it is written (:meth:`intervention`)."""

    vectors: Float[Tensor, "layer d_model"]
    alpha: float
    model_name: str
    task: str
    k: int
    info: dict = field(default_factory=dict)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(range(self.vectors.shape[0]))

    def intervention(
        self, alpha: float | None = None, layers: Sequence[int] | None = None
    ) -> Intervention:
        """Every layer's MLP output (every position) turned toward its ICV with strength
        ``alpha`` (default: the extraction's), norm kept; ``layers`` restricts the layers."""
        a = self.alpha if alpha is None else float(alpha)
        chosen = self.layers if layers is None else tuple(layers)
        writes = tuple(
            Write(int(layer), self.vectors[layer], point="mlp_module", op="icv", scale=a,
                  positions="all")
            for layer in chosen
        )  # fmt: skip
        return Intervention(writes, method="icv")


@torch.no_grad()
def first_token_accuracy(
    model: TVModel, batch: PromptBatch, intervention: Intervention | None = None
) -> float:
    """Share of prompts whose next token at the query is the answer's first token, with
    ``intervention`` applied (if given)."""
    rows = torch.arange(len(batch), device=batch.tokens.device)
    if intervention is None:
        logits = model(batch.tokens, attention_mask=batch.attention_mask)
    else:
        with apply_intervention(model, intervention):
            logits = model(batch.tokens, attention_mask=batch.attention_mask)
    pred = logits[rows, batch.query_pos].argmax(-1)
    return float((pred == batch.answer_first).float().mean())


def tune_alpha(
    model: TVModel, result: ICVResult, dev: PromptBatch, alphas: Sequence[float] = ALPHAS
) -> tuple[float, dict[float, float]]:
    """The α of ``alphas`` with the best first-token accuracy on ``dev`` (zero-shot *dev*
    prompts, never test ones; ties go to the smaller α), and every α's accuracy."""
    if not alphas:
        raise ConfigError("alphas is empty: give at least one strength to try.")
    scores = {float(a): first_token_accuracy(model, dev, result.intervention(a)) for a in alphas}
    best = max(sorted(scores), key=lambda a: scores[a])
    return best, scores


def in_context_vector(
    model: TVModel,
    task: Task,
    k: int = 5,
    seed: int = 0,
    template: str | PromptTemplate | None = None,
    alpha: float = D.ICV_ALPHA,  # the ICV method's options (defaults.py)
    rank: int = D.ICV_RANK,
    pair: str = D.ICV_PAIR,
    batch_size: int = 64,
) -> ICVResult:
    """The ICV of ``task`` from ``k`` of its examples (draw them from the train split).

    ``pair="separate"`` (the official code): ``x`` and ``y`` are the bare input and output
    texts. ``pair="joined"``: ``x`` is the zero-shot query prompt in ``template`` and ``y``
    the same prompt followed by its answer (the demonstration as the model sees it in a
    prompt), for tasks whose outputs mean little out of context.
    """
    if pair not in PAIRS:
        raise ConfigError(f"pair must be one of {PAIRS}, got {pair!r}.")
    if k < 2:
        raise ConfigError(f"ICV fits a PCA on the demonstrations' shifts: k must be >= 2, got {k}.")
    if rank < 1:
        raise ConfigError(f"rank must be >= 1, got {rank}.")
    demos = sample_demonstrations(task, k, seed)
    if pair == "separate":
        xs, ys = [d.input for d in demos], [d.output for d in demos]
    else:
        tmpl = get_template(model.template(template))
        xs = [tmpl.head + tmpl.query.format(x=d.input) for d in demos]
        ys = [x + tmpl.answer_prefix + d.output for x, d in zip(xs, demos, strict=True)]
    # Row 0: the token embedding (the official tracer hooks the embedding module), then
    # every block's output; the PCA runs over all of them, the embedding row is dropped after.
    names = ["hook_embed"] + [model.resid_hook(layer) for layer in range(model.n_layers)]
    acts = last_token_activations(model, token_rows(model, xs + ys), names, batch_size)
    h = torch.stack([acts[n] for n in names], dim=1)  # [2k, n_layers + 1, d_model]
    shifts = (h[k:] - h[:k]).reshape(k, -1)
    icv = pca_direction(shifts, rank).reshape(model.n_layers + 1, model.d_model)[1:]
    return ICVResult(
        vectors=icv.to(model.dtype), alpha=float(alpha), model_name=model.spec.name,
        task=task.name, k=k,
        info={"seed": seed, "rank": rank, "pair": pair,
              "demonstrations": [[d.input, d.output] for d in demos]},
    )  # fmt: skip
