"""ATV's data: zero-shot prompts of a suite's tasks, split per task into train / dev / test
queries, tokenized once for the target (prompt + answer, teacher forcing) and once for the
generator (the query alone, with its own tokenizer).

The synthetic setting (:func:`query_identifiable_suite`): a tvlens-trained target that does
``first`` and ``last`` of a symbol list in context, and three tasks whose *query alone* tells
which one is asked, by the list's length: ``last_of_2``, ``first_of_3``, ``last_of_4``.

Why this is a fair test of ATV: the frozen target can do each task only when it knows which
one is meant; zero-shot (the query alone, no demonstrations) it has to guess between first and
last. The generator sees the same query, no demonstrations and no task id, so it has to infer
the task from the query (here, from its length) and write a vector that puts the frozen target
in that task. Test queries are lists never seen in training, so remembering training answers
does not help: the steering has to carry the task, not the answer.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from tvlens.errors import EmptyTaskError, TVLensError
from tvlens.tasks.core import TaskSuite
from tvlens.tasks.prompts import (
    ICLPrompt,
    PaddingSide,
    PromptTemplate,
    get_template,
    tokenize_prompts,
)
from tvlens.tasks.registry import get_suite
from tvlens.tasks.synthetic import list_suite

GeneratorInput = Literal["prompt", "input", "query"]
# What the generator reads in Kang et al. 2025's official training script: the query alone in a
# fixed Q/A frame, while the target reads the instructed prompt.
QUERY_FORMAT = "Q: {x} \n A: "

# A tvlens-trained target for the synthetic setting: the `tiny` model trained on first/last of
# lists of 2-4 symbols in context (3 demonstrations), ~1 min on a 2-core CPU.
SYNTHETIC_TARGET = {
    "suite": {
        "name": "lists",
        "n_symbols": 16,
        "min_len": 2,
        "max_len": 4,
        "n_examples": 256,
        "ops": ["first", "last"],
        "seed": 0,
    },
    "k": 3,
    "n_ctx": 64,
    "steps": 200,
}
# task -> (list length, op)
QUERY_TASKS = {"last_of_2": (2, "last"), "first_of_3": (3, "first"), "last_of_4": (4, "last")}


def query_identifiable_suite(
    n_symbols: int = 16, n_examples: int = 600, seed: int = 1
) -> TaskSuite:
    """Three list tasks whose query identifies the task by its length (module docstring)."""
    tasks = []
    for name, (length, op) in QUERY_TASKS.items():
        lists = list_suite(
            n_symbols=n_symbols,
            min_len=length,
            max_len=length,
            n_examples=n_examples,
            ops=[op],
            seed=seed + length,
        )
        tasks.append(replace(lists.tasks[0], name=name, description=f"{op} of {length} symbols"))
    return TaskSuite(
        "atv_lists",
        tuple(tasks),
        description="list tasks identified by the query's length (ATV's synthetic setting)",
        spec={"name": "atv_lists", "n_symbols": n_symbols, "n_examples": n_examples, "seed": seed},
    )


def get_atv_suite(spec: dict | str) -> TaskSuite:
    """A suite from its spec: ``atv_lists`` (the synthetic setting) or any tvlens suite."""

    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if spec.get("name") == "atv_lists":
        spec.pop("name")
        return query_identifiable_suite(**spec)
    return get_suite(**spec)


@dataclass(frozen=True)
class ATVSplits:
    """Zero-shot prompts per split: each task's examples split into disjoint queries."""

    train: list[ICLPrompt]
    dev: list[ICLPrompt]
    test: list[ICLPrompt]
    tasks: list[str]

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}


def split_queries(
    suite: TaskSuite,
    n_train: int,
    n_dev: int,
    n_test: int,
    template: str | PromptTemplate = "arrow",
    seed: int = 0,
) -> ATVSplits:
    """``n_train`` / ``n_dev`` / ``n_test`` disjoint queries per task (a seeded shuffle of
    the task's examples; inputs never repeat across splits), as zero-shot prompts."""
    tmpl = get_template(template)
    parts: dict[str, list[ICLPrompt]] = {"train": [], "dev": [], "test": []}
    for ti, task in enumerate(suite):
        uniq = list({ex.input: ex for ex in task.examples}.values())
        need = n_train + n_dev + n_test
        if len(uniq) < need:
            raise EmptyTaskError(
                f"Task {task.name!r} has {len(uniq)} distinct inputs; {n_train} train + "
                f"{n_dev} dev + {n_test} test queries need {need}. Ask for fewer."
            )
        order = np.random.default_rng([seed, ti]).permutation(len(uniq))
        bounds = {"train": (0, n_train), "dev": (n_train, n_train + n_dev)}
        bounds["test"] = (n_train + n_dev, need)
        for split, (lo, hi) in bounds.items():
            parts[split] += [ICLPrompt(task.name, (), uniq[i], tmpl) for i in order[lo:hi]]
    return ATVSplits(parts["train"], parts["dev"], parts["test"], suite.names)


def hash_text(text: str) -> int:
    """A hash stable across processes (Python's ``hash`` of a str is salted)."""
    return zlib.crc32(text.encode("utf-8"))


def generator_text(prompt: ICLPrompt, generator_input: GeneratorInput = "prompt") -> str:
    """What the generator reads: the zero-shot prompt with its instruction (``"prompt"``, the
    same text in training and evaluation, unlike the official code), the raw query input
    (``"input"``), or the query in the official training script's frame, ``"Q: {input} \\n A: "``
    (``"query"``: no instruction, so the generator must infer the task from the query)."""
    if generator_input == "prompt":
        return prompt.zero_shot().text
    if generator_input == "input":
        return prompt.query.input
    if generator_input == "query":
        return QUERY_FORMAT.format(x=prompt.query.input)
    raise TVLensError(
        f"generator_input must be 'prompt', 'input' or 'query', got {generator_input!r}."
    )


def encode_for_generator(
    texts: Sequence[str],
    tokenizer: Any,
    bos_id: int | None,
    padding_side: PaddingSide = "left",
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Token ids and attention mask of ``texts`` with the generator's tokenizer, each row
    starting with ``bos_id`` (None: nothing)."""
    rows = []
    for t in texts:
        ids = list(tokenizer(t, add_special_tokens=False)["input_ids"])
        rows.append(([] if bos_id is None else [bos_id]) + ids)
    if any(not r for r in rows):
        raise TVLensError("A generator input tokenizes to nothing; use non-empty queries.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        off = width - len(r) if padding_side == "left" else 0
        tokens[i, off : off + len(r)] = torch.tensor(r)
        mask[i, off : off + len(r)] = 1
    return tokens, mask


@dataclass
class ATVBatch:
    """One batch: target tokens (prompt + answer), answer labels (-100 elsewhere), the query
    position (last prompt token) of every row, and the generator's tokens."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    labels: Int[Tensor, "batch pos"]
    query_pos: Int[Tensor, " batch"]
    gen_tokens: Int[Tensor, "batch gpos"]
    gen_mask: Int[Tensor, "batch gpos"]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: str | torch.device) -> ATVBatch:
        return ATVBatch(**{k: v.to(device) for k, v in self.__dict__.items()})


def make_batch(
    prompts: Sequence[ICLPrompt],
    target: Any,
    generator: Any,
    generator_input: GeneratorInput = "prompt",
    padding_side: PaddingSide = "left",
) -> ATVBatch:
    """Tokenize ``prompts`` for the target (with answers) and the generator (query only)."""
    pb = tokenize_prompts(
        list(prompts), target, padding_side=padding_side, include_answer=True, device="cpu"
    )
    labels = torch.full_like(pb.tokens, -100)
    for i, ans in enumerate(pb.answer_ids):
        q = int(pb.query_pos[i])
        labels[i, q + 1 : q + 1 + len(ans)] = torch.tensor(ans)
    gt, gm = encode_for_generator(
        [generator_text(p, generator_input) for p in prompts],
        generator.tokenizer,
        generator.bos_id,
        padding_side,
    )
    return ATVBatch(pb.tokens, pb.attention_mask, labels, pb.query_pos, gt, gm)
