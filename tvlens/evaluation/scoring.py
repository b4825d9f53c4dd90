"""Whole-answer scoring of any steered model: greedy exact match with the decoded predictions,
teacher-forced argmax of every answer token, first-token flags, and KL to ICL's next-token
distribution.

Why whole answers: first-token accuracy gives free or partial credit on multi-token answers
(DESIGN.md §8): SmolLM2 tokenizes ``" 7"`` as ``" "`` + ``"7"``, so a numeric task's first
token is a bare space every method gets right, and sibling tasks share first tokens
(``" O"strich``). The verdict metric is therefore greedy exact match; first token is kept
beside it, with the answers whose first token says nothing flagged (:func:`first_token_flags`).

**Exact match** (token level): greedy decoding from the prompt's last position writes the
answer's ``m`` tokens as its first ``m`` tokens (``m`` = the answer's length in the tokens
it has in context, ``PromptBatch.answer_ids``). What the model writes after them is not judged:
the prompt formats have no end-of-answer token. No normalisation (case, whitespace) is applied:
the answer's tokens are the target. The stored prediction is the decoded text of the generated
tokens, cut at the first newline and stripped of surrounding whitespace (for inspection).

**Interventions during decoding.** ``intervention_ctx`` is a zero-argument callable returning a
context manager that steers the model while it is active, e.g.
``lambda: inject(model, tv, layer=2)`` or ``partial(apply_intervention, model, iv)``. Its hooks
see a left-padded batch, so a write at the "last" position hits the prompt's query on the
first forward. Decoding follows the semantics of generation with a key/value cache, where each
position is computed once: ``steer="first_step"`` (default) applies the intervention on the
forward that reads the prompt only, and the generated tokens see the steered prompt through
attention — as the official code of Hendel et al. 2023 and Todd et al. 2024 patches the prompt
and then generates (both papers score the first token; this extends their intervention to
whole answers unchanged). ``steer="every_step"`` also applies it on each generated token's
forward, where "last" is the new token — as ATV (Kang et al. 2025) and ICV (Liu et al. 2024)
keep their hooks on during ``generate``.

Each step re-runs the whole sequence through the ``TVModel`` forward (no cache object, so
every architecture and hook works alike) and keeps what was computed before: the residual
stream entering every block is recorded at the positions already computed and written back
at later steps, so earlier positions (and the keys and values read from them) stay exactly
as they were computed, steered or not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tvlens.errors import PromptError, TVLensError
from tvlens.models.tvmodel import TVModel
from tvlens.tasks.prompts import PromptBatch

Steer = Literal["first_step", "every_step"]
InterventionCtx = Callable[[], AbstractContextManager]


class ScoringError(TVLensError, ValueError):
    """Options of a scoring function that do not fit together."""


# ---------------------------------------------------------------------------- prompts


def prompt_tokens(
    model: TVModel, batch: PromptBatch
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """The prompts of ``batch`` alone (no answer), left-padded: ``(tokens, attention_mask)``.

    Works for a batch of either padding side, with or without its answers appended: a row's
    prompt is its real tokens up to ``query_pos``.
    """
    rows = []
    for i in range(len(batch)):
        real = torch.nonzero(batch.attention_mask[i]).flatten()
        start, q = int(real[0]), int(batch.query_pos[i])
        rows.append(batch.tokens[i, start : q + 1])
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    return tokens.to(model.device), mask.to(model.device)


class _Replay:
    """Hooks on every block's input (and the last block's output, which the unembedding
    reads) that write back the values of positions computed at an earlier step and record the
    new ones: key/value-cache semantics on a full re-run. Registered after the
    intervention's hooks, so what is recorded is what the steered model computed."""

    def __init__(self, model: TVModel):
        self.names = [model.resid_hook(layer, "pre") for layer in range(model.n_layers)]
        self.names.append(model.resid_hook(model.n_layers - 1, "post"))
        self.stored: dict[str, Tensor] = {}

    def hooks(self) -> list[tuple[str, Any]]:
        return [(name, self._hook(name)) for name in self.names]

    def _hook(self, name: str) -> Any:
        def hook(act: Tensor, hook: Any = None) -> Tensor:
            old = self.stored.get(name)
            n = 0 if old is None else old.shape[1]
            if n:
                act = act.clone()
                act[:, :n] = old.to(act.dtype)
            new = act[:, n:].detach()
            self.stored[name] = new if old is None else torch.cat([old, new], 1)
            return act

        return hook


def _forward(
    model: TVModel,
    tokens: Tensor,
    mask: Tensor,
    ctx: InterventionCtx | None,
    replay: _Replay | None,
) -> Tensor:
    with ExitStack() as stack:
        if ctx is not None:
            stack.enter_context(ctx())
        if replay is not None:  # entered after the intervention: its hooks run after them
            stack.enter_context(model.bridge.hooks(fwd_hooks=replay.hooks()))
        return model(tokens, attention_mask=mask)


def _check_steer(steer: str) -> None:
    if steer not in ("first_step", "every_step"):
        raise ScoringError(f"steer must be 'first_step' or 'every_step', got {steer!r}.")


# ---------------------------------------------------------------------------- greedy


def _chunks(batch: PromptBatch, batch_size: int | None) -> list[PromptBatch]:
    """``batch`` in pieces of at most ``batch_size`` rows (one piece for None)."""
    if batch_size is None or batch_size >= len(batch):
        return [batch]
    if batch_size < 1:
        raise ScoringError(f"batch_size must be >= 1 (or None for one piece), got {batch_size}.")
    return [batch.select(range(i, min(i + batch_size, len(batch))))
            for i in range(0, len(batch), batch_size)]  # fmt: skip


@torch.no_grad()
def greedy_decode(
    model: TVModel,
    batch: PromptBatch,
    max_new_tokens: int,
    intervention_ctx: InterventionCtx | None = None,
    steer: str = "first_step",  # Steer; checked with a clear line (not by the type checker)
    batch_size: int | None = 16,
) -> tuple[Int[Tensor, "batch new"], Float[Tensor, "batch d_vocab"]]:
    """Greedy continuation of each prompt of ``batch``: ``(generated ids [batch,
    max_new_tokens], next-token logits at the prompt's last position [batch, d_vocab])``.
    See the module doc for how ``intervention_ctx`` and ``steer`` apply. Runs ``batch_size``
    prompts at a time (the forward's logits are ``batch x positions x vocabulary``); an
    intervention with one vector per prompt (``[batch, d_model]``) needs ``batch_size=None``."""
    _check_steer(steer)
    if max_new_tokens < 1:
        raise ScoringError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    parts = [_greedy_chunk(model, part, max_new_tokens, intervention_ctx, steer)
             for part in _chunks(batch, batch_size)]  # fmt: skip
    return torch.cat([g for g, _ in parts]), torch.cat([lg for _, lg in parts])


def _greedy_chunk(
    model: TVModel,
    batch: PromptBatch,
    max_new_tokens: int,
    intervention_ctx: InterventionCtx | None,
    steer: str,
) -> tuple[Tensor, Tensor]:
    tokens, mask = prompt_tokens(model, batch)
    if tokens.shape[1] + max_new_tokens - 1 > model.n_ctx:
        raise PromptError(
            f"Prompts of {tokens.shape[1]} tokens plus {max_new_tokens} new ones exceed "
            f"{model.name}'s context ({model.n_ctx}): use fewer demonstrations or new tokens."
        )
    # Without an intervention a re-run computes every earlier position as before: no replay.
    replay = _Replay(model) if intervention_ctx is not None else None
    out, first_logits = [], None
    for step in range(max_new_tokens):
        steer_now = step == 0 or steer == "every_step"
        logits = _forward(model, tokens, mask, intervention_ctx if steer_now else None, replay)
        last = logits[:, -1].float()
        if first_logits is None:
            first_logits = last
        nxt = last.argmax(-1)
        out.append(nxt)
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.stack(out, 1).cpu(), first_logits.cpu()


@dataclass(frozen=True)
class AnswerScores:
    """Per-query scores of one method on one batch (in the batch's order)."""

    tasks: list[str]
    queries: list[str]  # the query's input: its id within the task
    answers: list[str]
    predictions: list[str]  # decoded greedy continuation, cut at a newline, stripped
    generated: list[tuple[int, ...]]
    exact: np.ndarray  # bool: the first m generated tokens are the answer's m tokens
    first_token: np.ndarray  # bool: the first generated token is the answer's first
    steer: str
    # Next-token logits at the answer position [batch, d_vocab] (for kl_to_reference: no
    # extra forward needed).
    logits: Tensor = field(repr=False, default_factory=lambda: torch.empty(0))

    def records(self, method: str, seed: int | None = None) -> list[dict]:
        """Rows for :mod:`tvlens.evaluation.stats` (``value`` = exact match) with the
        first-token score, the prediction and the answer beside it."""
        return [
            {"task": t, "query": q, "seed": seed, "method": method, "value": float(e),
             "first_token": bool(f), "prediction": p, "answer": a}
            for t, q, e, f, p, a in zip(self.tasks, self.queries, self.exact, self.first_token,
                                        self.predictions, self.answers, strict=True)
        ]  # fmt: skip


def _prediction(tok: Any, ids: Sequence[int]) -> str:
    text = tok.decode(list(ids), skip_special_tokens=True)
    return text.split("\n", 1)[0].strip()


def greedy_exact_match(
    model: TVModel,
    batch: PromptBatch,
    answer_ids: Sequence[Sequence[int]] | None = None,
    max_new_tokens: int | None = None,
    intervention_ctx: InterventionCtx | None = None,
    steer: str = "first_step",  # Steer; checked with a clear line (not by the type checker)
    batch_size: int | None = 16,
) -> AnswerScores:
    """Greedy decoding of every prompt, scored against its answer's tokens.

    Args:
        model: A loaded model; decoding runs its forward.
        batch: Prompts (either padding side; appended answers are ignored).
        answer_ids: The target tokens per row (default: ``batch.answer_ids``, the answer's
            tokens as they follow the prompt).
        max_new_tokens: Tokens to generate (default: the longest answer; more only lengthens
            the stored predictions).
        intervention_ctx / steer: How a steering method is applied (module doc).
        batch_size: Prompts per forward (None: all at once; needed for an intervention
            with one vector per prompt).
    """
    answer_ids = [tuple(a) for a in (answer_ids if answer_ids is not None else batch.answer_ids)]
    if len(answer_ids) != len(batch):
        raise ScoringError(f"{len(answer_ids)} answers for a batch of {len(batch)} prompts.")
    longest = max(len(a) for a in answer_ids)
    if max_new_tokens is None:
        max_new_tokens = longest
    if max_new_tokens < longest:
        raise ScoringError(
            f"max_new_tokens={max_new_tokens} is shorter than the longest answer ({longest} "
            "tokens), which could then never match: leave it out or raise it."
        )
    gen, logits = greedy_decode(model, batch, max_new_tokens, intervention_ctx, steer, batch_size)
    rows = [tuple(int(x) for x in g) for g in gen]
    exact = np.array([g[: len(a)] == a for g, a in zip(rows, answer_ids, strict=True)])
    first = np.array([g[0] == a[0] for g, a in zip(rows, answer_ids, strict=True)])
    tok = model.tokenizer
    return AnswerScores(
        tasks=batch.task_names,
        queries=[p.query.input for p in batch.prompts],
        answers=batch.answers,
        predictions=[_prediction(tok, g) for g in rows],
        generated=rows,
        exact=exact,
        first_token=first,
        steer=steer,
        logits=logits,
    )


# ---------------------------------------------------------------------------- teacher forcing


@torch.no_grad()
def teacher_forced_whole_answer(
    model: TVModel,
    batch: PromptBatch,
    answer_ids: Sequence[Sequence[int]] | None = None,
    intervention_ctx: InterventionCtx | None = None,
    batch_size: int | None = 16,
) -> tuple[Bool[Tensor, " batch"], Bool[Tensor, " batch"]]:
    """``(first token correct, every answer token correct)`` by the argmax of each answer
    token given the prompt and the answer's earlier tokens, in one forward over prompt +
    answer (two with an intervention: the prompt under it, then prompt + answer with the
    prompt's positions as steered). Equal to :func:`greedy_exact_match` with
    ``steer="first_step"``: greedy decoding writes the answer exactly when every one of these
    argmaxes is right. (``steer="every_step"`` has no one-pass equivalent.) ``batch_size``
    as for :func:`greedy_exact_match`."""
    answer_ids = [tuple(a) for a in (answer_ids if answer_ids is not None else batch.answer_ids)]
    if len(answer_ids) != len(batch):
        raise ScoringError(f"{len(answer_ids)} answers for a batch of {len(batch)} prompts.")
    firsts, exacts, start = [], [], 0
    for part in _chunks(batch, batch_size):
        f, e = _teacher_chunk(model, part, answer_ids[start : start + len(part)], intervention_ctx)
        firsts.append(f)
        exacts.append(e)
        start += len(part)
    return torch.cat(firsts), torch.cat(exacts)


def _teacher_chunk(
    model: TVModel,
    batch: PromptBatch,
    answer_ids: list[tuple[int, ...]],
    intervention_ctx: InterventionCtx | None,
) -> tuple[Tensor, Tensor]:
    tokens, mask = prompt_tokens(model, batch)
    width, m = tokens.shape[1], max(len(a) for a in answer_ids)
    if width + m - 1 > model.n_ctx:
        raise PromptError(
            f"Prompts of {width} tokens plus answers of {m} exceed {model.name}'s context "
            f"({model.n_ctx}): use fewer demonstrations."
        )
    replay = None
    if intervention_ctx is not None:
        replay = _Replay(model)
        _forward(model, tokens, mask, intervention_ctx, replay)
    # Answers right after the prompt, right-padded (a padded column is never read).
    full = torch.cat([tokens, tokens.new_zeros(len(batch), m)], 1)
    full_mask = torch.cat([mask, mask.new_zeros(len(batch), m)], 1)
    for i, a in enumerate(answer_ids):
        full[i, width : width + len(a)] = torch.tensor(a, device=full.device)
        full_mask[i, width : width + len(a)] = 1
    logits = _forward(model, full, full_mask, None, replay)
    pred = logits[:, width - 1 : width - 1 + m].argmax(-1).cpu()
    first = torch.tensor([bool(pred[i, 0] == a[0]) for i, a in enumerate(answer_ids)])
    exact = torch.tensor(
        [pred[i, : len(a)].tolist() == list(a) for i, a in enumerate(answer_ids)], dtype=torch.bool
    )
    return first, exact


# ---------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class FirstTokenFlag:
    """Why the first token of an answer may say little about the whole answer."""

    task: str
    answer: str
    first_token: str
    whitespace: bool  # the first token is only whitespace (" " before "7")
    shared_with: tuple[str, ...]  # other tasks with an answer that starts with this token

    @property
    def flagged(self) -> bool:
        return self.whitespace or bool(self.shared_with)


def first_token_flags(
    answers: PromptBatch | Mapping[str, Sequence[str]],
    tokenizer: Any,
    prefix: str = " ",
) -> list[FirstTokenFlag]:
    """One :class:`FirstTokenFlag` per answer: its first token is whitespace only, or is the
    first token of an answer of another task (sibling tasks: ``" O"`` of ``"Ostrich"`` and
    ``"Owl"``).

    ``answers``: a :class:`PromptBatch` (the answers' tokens in context: exact), or
    ``{task: [answer, ...]}`` tokenized as ``prefix + answer`` (the ``x -> y`` and ``Q/A``
    templates put a space before the answer).
    """
    if isinstance(answers, PromptBatch):
        b = answers
        items = [(t, a, ids[0]) for t, a, ids in zip(b.task_names, b.answers, b.answer_ids,
                                                     strict=True)]  # fmt: skip
    else:
        items = []
        for task, outs in answers.items():
            for a in outs:
                ids = tokenizer(prefix + a, add_special_tokens=False)["input_ids"]
                if not ids:
                    raise PromptError(f"Answer {a!r} of task {task!r} tokenizes to nothing.")
                items.append((task, a, int(ids[0])))
    tasks_by_token: dict[int, set[str]] = {}
    for task, _, first in items:
        tasks_by_token.setdefault(first, set()).add(task)
    out = []
    for task, a, first in items:
        text = tokenizer.decode([first])
        others = tuple(sorted(tasks_by_token[first] - {task}))
        out.append(FirstTokenFlag(task, a, text, not text.strip(), others))
    return out


# ---------------------------------------------------------------------------- KL to ICL


@torch.no_grad()
def answer_logits(
    model: TVModel,
    batch: PromptBatch,
    intervention_ctx: InterventionCtx | None = None,
    batch_size: int | None = 16,
) -> Float[Tensor, "batch d_vocab"]:
    """Next-token logits at each prompt's last position (where the answer starts), under
    ``intervention_ctx`` if given, ``batch_size`` prompts at a time."""
    out = []
    for part in _chunks(batch, batch_size):
        tokens, mask = prompt_tokens(model, part)
        out.append(_forward(model, tokens, mask, intervention_ctx, None)[:, -1].float().cpu())
    return torch.cat(out)


def kl_to_reference(
    logits_ref: Float[Tensor, "batch d_vocab"],
    logits_method: Float[Tensor, "batch d_vocab"],
) -> Float[Tensor, " batch"]:
    """``KL(P_ref || P_method)`` per query of the next-token distributions at the answer
    position, in nats: how far a method's prediction is from what the demonstrations do
    (``ref`` = the ICL prompt's logits, ``method`` = the steered zero-shot prompt's), the
    metric the Linear TV paper (2026) puts beside accuracy. 0 iff the distributions agree."""
    if logits_ref.shape != logits_method.shape:
        raise ScoringError(
            f"Logits of shapes {tuple(logits_ref.shape)} and {tuple(logits_method.shape)}: "
            "give one row per query over the same vocabulary for both."
        )
    log_p = torch.log_softmax(logits_ref.double(), -1)
    log_q = torch.log_softmax(logits_method.double(), -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return kl.clamp(min=0.0).to(logits_ref.dtype)
