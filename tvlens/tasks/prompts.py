"""ICL prompts: k demonstrations and a query, rendered with a template and tokenized.

The query position is the last token of the prompt (the ``->`` of ``x ->`` or the ``A:`` of
``Q: x\\nA:``): the position task vectors are read from and written to. Padding side is
explicit, and :class:`PromptBatch` records the query position of every row under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from tvlens.errors import ConfigError, EmptyTaskError, PromptError
from tvlens.tasks.core import Example, Task

PaddingSide = Literal["left", "right"]


@dataclass(frozen=True)
class PromptTemplate:
    """How demonstrations and the query are written.

    ``demo`` and ``query`` are format strings with ``{x}`` (and ``{y}``); ``separator`` goes
    between demonstrations and before the query; ``answer_prefix`` goes between the query
    and its answer when the answer is appended (a space for ``x -> y``). ``instruction``
    (optional) is a natural-language line that opens the prompt, before the demonstrations
    (the instructed prompts of Kang et al. 2025's tasks).
    """

    name: str
    demo: str
    query: str
    separator: str
    answer_prefix: str = " "
    instruction: str = ""

    @property
    def head(self) -> str:
        """What opens every prompt: the instruction line and a newline, or nothing."""
        return self.instruction + "\n" if self.instruction else ""

    def with_instruction(self, instruction: str, name: str | None = None) -> PromptTemplate:
        """The same layout opened by ``instruction`` (one line, no newline)."""
        if "\n" in instruction or not instruction.strip():
            raise PromptError(f"An instruction is one non-empty line, got {instruction!r}.")
        return replace(self, instruction=instruction, name=name or f"{self.name}+instruction")

    def bare(self) -> PromptTemplate:
        """The same layout without an instruction."""
        return replace(self, instruction="", name=self.name.split("+")[0])

    def render(self, demos: Sequence[Example], query: Example) -> str:
        parts = [self.demo.format(x=d.input, y=d.output) for d in demos]
        parts.append(self.query.format(x=query.input))
        return self.head + self.separator.join(parts)

    def segments(self, demos: Sequence[Example], query: Example) -> list[tuple[str, bool]]:
        """The prompt *with* the query's answer as ``(text, is_answer)`` pieces, whose
        concatenation is ``render(...) + answer_prefix + answer``. Used by training to put the
        loss on every answer (demonstrations' and query's)."""
        out: list[tuple[str, bool]] = [(self.head, False)] if self.head else []
        head, _, tail = self.demo.partition("{y}")
        for i, d in enumerate(demos):
            if i:
                out.append((self.separator, False))
            out.append((head.format(x=d.input), False))
            out.append((d.output, True))
            if tail:
                out.append((tail.format(x=d.input), False))
        if demos:
            out.append((self.separator, False))
        out.append((self.query.format(x=query.input) + self.answer_prefix, False))
        out.append((query.output, True))
        return _space_with_answer(out)


def _space_with_answer(segments: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Move the whitespace that ends a piece into the answer that follows it (``"x -> "``,
    ``"y"`` becomes ``"x ->"``, ``" y"``): a BPE tokenizer (GPT-2's, SmolLM2's) attaches a
    space to the word after it, so pieces encoded one by one then give the tokens of the
    whole prompt (``" y"`` is one token where ``" "`` + ``"y"`` would be two); word-level
    tokenizers drop the space either way."""
    out = list(segments)
    for i in range(len(out) - 1):
        (text, is_answer), (nxt, nxt_is_answer) = out[i], out[i + 1]
        stripped = text.rstrip()
        if nxt_is_answer and not is_answer and stripped != text and stripped:
            out[i], out[i + 1] = (stripped, False), (text[len(stripped) :] + nxt, True)
    return out


TEMPLATES: dict[str, PromptTemplate] = {
    # ``x -> y`` lines: the layout of Hendel et al. 2023's paper figures, tvlens's default.
    "arrow": PromptTemplate("arrow", "{x} -> {y}", "{x} ->", "\n"),
    # Hendel et al. 2023's code (roeehendel/icl_task_vectors, FewShotFormat): demonstrations
    # "example:{input}->{output}" joined by "\n", then "\n" and the query "example:{input}->";
    # the answer follows "->" with no space.
    "hendel": PromptTemplate("hendel", "example:{x}->{y}", "example:{x}->", "\n", ""),
    # Todd et al. 2023's code (ericwtodd/function_vectors, word_pairs_to_prompt_data with its
    # defaults): prefixes "Q:" / "A:", separators "\n" / "\n\n", a space before every input and
    # output; the query ends at "A:" and the target is " " + output.
    "qa": PromptTemplate("qa", "Q: {x}\nA: {y}", "Q: {x}\nA:", "\n\n"),
    "todd": PromptTemplate("todd", "Q: {x}\nA: {y}", "Q: {x}\nA:", "\n\n"),
}


def get_template(template: str | PromptTemplate) -> PromptTemplate:
    if isinstance(template, PromptTemplate):
        return template
    if template not in TEMPLATES:
        raise PromptError(
            f"Unknown template {template!r}. Use one of {list(TEMPLATES)} or a PromptTemplate."
        )
    return TEMPLATES[template]


@dataclass(frozen=True)
class ICLPrompt:
    """k demonstrations and a query of one task."""

    task: str
    demonstrations: tuple[Example, ...]
    query: Example
    template: PromptTemplate = TEMPLATES["arrow"]

    @property
    def k(self) -> int:
        return len(self.demonstrations)

    @property
    def text(self) -> str:
        """The prompt without the answer, ending at the query position."""
        return self.template.render(self.demonstrations, self.query)

    @property
    def answer(self) -> str:
        return self.query.output

    def with_query(self, query: Example) -> ICLPrompt:
        return replace(self, query=query)

    def zero_shot(self) -> ICLPrompt:
        """The same query with no demonstrations."""
        return replace(self, demonstrations=())

    def with_shuffled_labels(self, rng: np.random.Generator) -> ICLPrompt:
        """Demonstration outputs permuted among the demonstrations (Todd et al.'s corrupted
        prompts); the query and its answer are unchanged."""
        outs = [d.output for d in self.demonstrations]
        perm = rng.permutation(len(outs))
        if len(outs) > 1 and all(outs[p] == o for p, o in zip(perm, outs, strict=True)):
            perm = np.roll(perm, 1)  # a shuffle that changes nothing would be no corruption
        demos = tuple(
            Example(d.input, outs[p]) for d, p in zip(self.demonstrations, perm, strict=True)
        )
        return replace(self, demonstrations=demos)


def _check_k(task: Task, k: int, n_queries: int = 1) -> None:
    if k < 0:
        raise PromptError(f"k (number of demonstrations) must be >= 0, got {k}.")
    if k + n_queries > len(task):
        raise EmptyTaskError(
            f"Task {task.name!r} has {len(task)} examples but k={k} demonstrations plus "
            f"{n_queries} query need {k + n_queries}. Use a smaller k or a larger task."
        )


def _random_outputs(task: Task, exs: Sequence[Example], rng: np.random.Generator):
    pool = task.outputs
    return tuple(Example(e.input, pool[int(rng.integers(len(pool)))]) for e in exs)


def sample_prompts(
    task: Task,
    k: int,
    n: int,
    seed: int = 0,
    template: str | PromptTemplate = "arrow",
    queries: Task | None = None,
) -> list[ICLPrompt]:
    """``n`` prompts of ``k`` demonstrations + a query.

    Queries come from ``queries`` (e.g. a test split) or from ``task``; demonstrations from
    ``task``, never repeating the query's input. When ``n`` is at most the number of queries,
    each query is used once (in a seeded random order). For the Null task
    (``task.random_outputs``), every output in the prompt is drawn at random.
    """
    template = get_template(template)
    if n < 1:
        raise PromptError(f"n (number of prompts) must be >= 1, got {n}.")
    qtask = queries if queries is not None else task
    _check_k(task, k, 0 if queries is not None else 1)
    rng = np.random.default_rng(seed)
    q_order = (
        rng.permutation(len(qtask))[:n] if n <= len(qtask) else rng.integers(0, len(qtask), size=n)
    )
    prompts = []
    for qi in q_order:
        query = qtask.examples[int(qi)]
        pool = [i for i, e in enumerate(task.examples) if e.input != query.input]
        if k > len(pool):
            raise EmptyTaskError(
                f"Task {task.name!r} has only {len(pool)} demonstrations whose input differs "
                f"from the query {query.input!r}; k={k} is too many."
            )
        demos = tuple(task.examples[int(i)] for i in rng.choice(pool, size=k, replace=False))
        if task.random_outputs:
            demos = _random_outputs(task, demos, rng)
            query = _random_outputs(task, [query], rng)[0]
        prompts.append(ICLPrompt(task.name, demos, query, template))
    return prompts


def dummy_query_variants(
    prompts: Sequence[ICLPrompt], task: Task, seed: int = 0
) -> list[ICLPrompt]:
    """Each prompt with its query replaced by a *dummy* query from ``task`` that is neither the
    real query nor a demonstration (Hendel et al.: the task vector is read from prompts whose
    query differs from the test query)."""
    rng = np.random.default_rng(seed)
    out = []
    for p in prompts:
        used = {p.query.input} | {d.input for d in p.demonstrations}
        pool = [e for e in task.examples if e.input not in used]
        if not pool:
            raise EmptyTaskError(
                f"Task {task.name!r} has no example left for a dummy query with "
                f"k={p.k}; use a smaller k or a larger task."
            )
        out.append(p.with_query(pool[int(rng.integers(len(pool)))]))
    return out


def shuffled_label_variants(prompts: Sequence[ICLPrompt], seed: int = 0) -> list[ICLPrompt]:
    """Each prompt with its demonstration labels shuffled (function-vector corruptions)."""
    few = next((p for p in prompts if p.k < 2), None)
    if few is not None:
        raise PromptError(
            f"Shuffling the labels of k={few.k} demonstration(s) changes nothing, so clean and "
            "corrupted prompts would be the same and every effect 0: use k >= 2."
        )
    rng = np.random.default_rng(seed)
    return [p.with_shuffled_labels(rng) for p in prompts]


# ---------------------------------------------------------------------------- tokenization


@dataclass
class PromptBatch:
    """Tokenized prompts, padded on an explicit side.

    ``tokens[i, query_pos[i]]`` is the last prompt token of row ``i`` (under either padding
    side). When built with ``include_answer=True`` the answer tokens follow the query position,
    ``tokens[i, query_pos[i] + 1 + j] == answer_ids[i][j]``; otherwise ``tokens`` ends at the
    prompt and the answer is only in ``answer_ids``.
    """

    prompts: list[ICLPrompt]
    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    query_pos: Int[Tensor, " batch"]
    answer_ids: list[tuple[int, ...]]
    padding_side: PaddingSide
    include_answer: bool = False
    answer_first: Int[Tensor, " batch"] = field(init=False)

    def __post_init__(self) -> None:
        self.answer_first = torch.tensor(
            [a[0] for a in self.answer_ids], dtype=torch.long, device=self.tokens.device
        )

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def task_names(self) -> list[str]:
        return [p.task for p in self.prompts]

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    @property
    def answers(self) -> list[str]:
        return [p.answer for p in self.prompts]

    @property
    def single_token_answers(self) -> bool:
        return all(len(a) == 1 for a in self.answer_ids)

    def require_single_token(self) -> None:
        """Raise :class:`PromptError` naming the prompts whose answer is several tokens."""
        bad = [
            (p.answer, a) for p, a in zip(self.prompts, self.answer_ids, strict=True) if len(a) != 1
        ]
        if bad:
            raise PromptError(
                f"{len(bad)} answer(s) are more than one token (e.g. {bad[0][0]!r} -> ids "
                f"{list(bad[0][1])}); this measure reads the answer's first token only. Use "
                "single-token tasks, or exact-match evaluation for multi-token answers."
            )

    def require_answer_token(self, answer_token: str, where: str = "answer_token") -> None:
        """The one policy of every function that scores an answer by one token:
        ``answer_token="only"`` refuses answers of several tokens, saying how to score their
        first token instead (``"first"``, explicitly); never a silent first-token score."""
        if answer_token not in ("only", "first"):
            raise ConfigError(f"{where} must be 'only' or 'first', got {answer_token!r}.")
        if answer_token == "first":
            return
        try:
            self.require_single_token()
        except PromptError as e:
            raise PromptError(
                f"{str(e).split('; ')[0]}; one token is scored per answer: pass "
                f"{where}='first' (--answer-token first) to score each answer's first token "
                "(as Hendel et al. and Todd et al. do), or use single-token tasks."
            ) from None

    def to(self, device: str | torch.device) -> PromptBatch:
        return replace(
            self,
            tokens=self.tokens.to(device),
            attention_mask=self.attention_mask.to(device),
            query_pos=self.query_pos.to(device),
        )

    def select(self, index: Sequence[int]) -> PromptBatch:
        idx = torch.as_tensor(list(index), dtype=torch.long)
        return replace(
            self,
            prompts=[self.prompts[i] for i in idx.tolist()],
            tokens=self.tokens[idx.to(self.tokens.device)],
            attention_mask=self.attention_mask[idx.to(self.tokens.device)],
            query_pos=self.query_pos[idx.to(self.tokens.device)],
            answer_ids=[self.answer_ids[i] for i in idx.tolist()],
        )


def _resolve_tokenizer(
    model_or_tokenizer: Any, prepend_bos: bool | None
) -> tuple[Any, int | None, int | None]:
    """(tokenizer, n_ctx, the token id prompts start with or None) from a tvlens model, a
    bridge or a tokenizer. A tvlens model decides the first token (``TVModel.bos_for``: its
    BOS policy), so that every kind of prompt starts alike."""
    tok = getattr(model_or_tokenizer, "tokenizer", None)
    if tok is None:
        tok = model_or_tokenizer
        n_ctx = getattr(tok, "model_max_length", None)
        if n_ctx is not None and n_ctx > 10**8:  # HF's "no limit" sentinel
            n_ctx = None
        bos = tok.bos_token_id is not None if prepend_bos is None else prepend_bos
        if bos and tok.bos_token_id is None:
            raise PromptError("prepend_bos=True but the tokenizer has no BOS token.")
        return tok, n_ctx, (tok.bos_token_id if bos else None)
    cfg = getattr(model_or_tokenizer, "cfg", None)
    n_ctx = getattr(model_or_tokenizer, "n_ctx", None) or getattr(cfg, "n_ctx", None)
    if hasattr(type(model_or_tokenizer), "bos_for"):  # a TVModel
        return tok, n_ctx, model_or_tokenizer.bos_for(prepend_bos)
    bos = prepend_bos
    if bos is None:
        bos = getattr(cfg, "default_prepend_bos", True) and tok.bos_token_id is not None
    if bos and tok.bos_token_id is None:
        raise PromptError("prepend_bos=True but the tokenizer has no BOS token.")
    return tok, n_ctx, (tok.bos_token_id if bos else None)


def _encode(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def answer_token_ids(tok: Any, prompt_ids: list[int], prompt: ICLPrompt) -> list[int]:
    """The tokens the answer adds after the prompt, as the model would see them in context.

    Tokenizes prompt + answer together and keeps what follows the prompt's tokens, so that BPE
    spaces (``" Paris"`` vs ``"Paris"``) come out right; falls back to the answer on its own
    when the two tokenizations do not share the prompt as a prefix.
    """
    full = _encode(tok, prompt.text + prompt.template.answer_prefix + prompt.answer)
    n = len(prompt_ids)
    if full[:n] == prompt_ids and len(full) > n:
        return full[n:]
    return _encode(tok, prompt.template.answer_prefix + prompt.answer)


def _raise_unknown_word(tok: Any, prompt: ICLPrompt) -> None:
    """PromptError naming the first word of ``prompt`` that the tokenizer maps to its unknown
    token (such a prompt would be scored, silently, as always wrong)."""
    words = [w for ex in (*prompt.demonstrations, prompt.query) for w in (ex.input, ex.output)]
    bad = next((w for w in words if tok.unk_token_id in _encode(tok, w)), prompt.text)
    raise PromptError(
        f"{bad!r} (task {prompt.task!r}) tokenizes to the unknown token {tok.unk_token!r}: "
        "this model's tokenizer does not know it. Use tasks in the model's vocabulary "
        "(for a tvlens-trained model, its training suite)."
    )


def tokenize_prompts(
    prompts: Sequence[ICLPrompt],
    model_or_tokenizer: Any,
    padding_side: PaddingSide = "left",
    prepend_bos: bool | None = None,
    include_answer: bool = False,
    device: str | torch.device | None = None,
) -> PromptBatch:
    """Tokenize prompts into a padded batch with query positions and answer token ids.

    Args:
        prompts: From :func:`sample_prompts` (any mix of tasks).
        model_or_tokenizer: A tvlens ``TVModel``, a ``TransformerBridge`` or an HF tokenizer.
            With a model, prompts longer than its context raise :class:`PromptError`.
        padding_side: ``"left"`` (query at the last column) or ``"right"``.
        prepend_bos: Prepend a BOS token; default: the model's policy (``TVModel.prompt_bos``:
            e.g. SmolLM2's document-start ``<|endoftext|>``), or for a bare tokenizer its
            ``bos_token``.
        include_answer: Append each answer's tokens after the query (teacher forcing).
        device: Where to put the tensors (default: the model's device, else CPU).
    """
    if padding_side not in ("left", "right"):
        raise PromptError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    if not prompts:
        raise EmptyTaskError("No prompts to tokenize.")
    tok, n_ctx, bos_id = _resolve_tokenizer(model_or_tokenizer, prepend_bos)
    rows, qpos_in_row, answers = [], [], []
    unk = getattr(tok, "unk_token_id", None)
    for p in prompts:
        ids = _encode(tok, p.text)
        ans = answer_token_ids(tok, ids, p)
        if not ans:
            raise PromptError(f"Answer {p.answer!r} of task {p.task!r} tokenizes to nothing.")
        if unk is not None and (unk in ids or unk in ans):
            _raise_unknown_word(tok, p)
        if bos_id is not None:
            ids = [bos_id, *ids]
        qpos_in_row.append(len(ids) - 1)
        rows.append(ids + ans if include_answer else ids)
        answers.append(tuple(ans))
    width = max(len(r) for r in rows)
    if n_ctx is not None and width > n_ctx:
        longest = int(np.argmax([len(r) for r in rows]))
        raise PromptError(
            f"Prompt {longest} is {width} tokens long, longer than the model's context "
            f"(n_ctx={n_ctx}). Use fewer demonstrations (smaller k) or shorter examples."
        )
    pad = tok.pad_token_id
    if pad is None:
        pad = tok.eos_token_id if tok.eos_token_id is not None else 0
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    qpos = torch.empty(len(rows), dtype=torch.long)
    for i, (r, q) in enumerate(zip(rows, qpos_in_row, strict=True)):
        off = width - len(r) if padding_side == "left" else 0
        tokens[i, off : off + len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, off : off + len(r)] = 1
        qpos[i] = off + q
    if device is None:
        device = getattr(model_or_tokenizer, "device", None) or "cpu"
    return PromptBatch(
        prompts=list(prompts),
        tokens=tokens.to(device),
        attention_mask=mask.to(device),
        query_pos=qpos.to(device),
        answer_ids=answers,
        padding_side=padding_side,
        include_answer=include_answer,
    )
