"""Training batches of ICL prompts with the loss on every answer token.

Batch ``s`` is drawn from ``numpy.random.default_rng([seed, s])``: a function of the step
alone, so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from tvlens.errors import PromptError
from tvlens.tasks.core import Example, TaskSuite
from tvlens.tasks.prompts import ICLPrompt, get_template

IGNORE = -100


@dataclass
class TrainBatch:
    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    labels: Int[Tensor, "batch pos"]  # next-token targets aligned with input_ids (HF style)
    # answer_start[i, j]: position of the first token of answer j (j = k is the query's).
    answer_start: Int[Tensor, "batch n_answers"]
    task_index: Int[Tensor, " batch"]
    is_answer: Bool[Tensor, "batch pos"]
    # The same queries as zero-shot prompts ``<bos> x ->`` (left-padded) and their first
    # answer token: what the task-vector auxiliary loss writes a vector into.
    zs_input_ids: Int[Tensor, "batch zpos"]
    zs_attention_mask: Int[Tensor, "batch zpos"]
    zs_answer: Int[Tensor, " batch"]

    def to(self, device: str | torch.device) -> TrainBatch:
        return TrainBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


class ICLBatcher:
    """Makes padded training batches of ``k``-shot prompts from a suite, word-tokenized."""

    def __init__(
        self,
        suite: TaskSuite,
        tokenizer: Any,
        k: int,
        template: str = "arrow",
        n_ctx: int | None = None,
        bos_id: int | None = None,
    ):
        self.suite = suite
        self.tok = tokenizer
        # What every prompt starts with: the model's BOS policy (TVModel.prompt_bos_id), so
        # that training prompts are the prompts it is scored on; default the tokenizer's BOS.
        self.bos_id = tokenizer.bos_token_id if bos_id is None else bos_id
        self.k = k
        self.template = get_template(template)
        self.n_ctx = n_ctx
        self._cache: dict[str, list[int]] = {}
        for t in suite:
            if len(t) < k + 1:
                raise PromptError(
                    f"Task {t.name!r} has {len(t)} examples; k={k} needs at least {k + 1}."
                )

    def encode(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = list(self.tok(text, add_special_tokens=False)["input_ids"])
            self._cache[text] = ids
        return ids

    def prompt(self, task_i: int, idx: np.ndarray, rng: np.random.Generator) -> ICLPrompt:
        task = self.suite.tasks[task_i]
        exs = [task.examples[int(i)] for i in idx]
        if task.random_outputs:
            pool = task.outputs
            exs = [Example(e.input, pool[int(rng.integers(len(pool)))]) for e in exs]
        return ICLPrompt(task.name, tuple(exs[:-1]), exs[-1], self.template)

    def encode_prompt(self, p: ICLPrompt) -> tuple[list[int], list[bool], list[int], list[int]]:
        """(token ids with BOS, is-answer flags, start of each answer, zero-shot query ids).

        The prompt is tokenized whole, as scoring tokenizes it (:func:`tokenize_prompts`):
        a BPE tokenizer merges across the template's pieces (``"\\n\\n"`` is one token alone
        and two in context), so answers are found by character offsets. Tokenizers without
        offsets (slow ones) encode piece by piece."""
        segments = self.template.segments(p.demonstrations, p.query)
        zero_shot = [self.bos_id, *self.encode(segments[-2][0])]
        if getattr(self.tok, "is_fast", False):
            text, answers, pos = "", [], 0
            for piece, is_ans in segments:
                if is_ans:
                    answers.append((pos, pos + len(piece)))
                text, pos = text + piece, pos + len(piece)
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, flags, starts = [self.bos_id], [False], []
            for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
                hit = next((j for j, (lo, hi) in enumerate(answers) if a < hi and b > lo), None)
                if hit is not None and hit == len(starts):
                    starts.append(len(ids))
                ids.append(tid)
                flags.append(hit is not None)
            if len(starts) == len(answers):
                return ids, flags, starts, zero_shot
        ids, flags, starts = [self.bos_id], [False], []
        for text, is_ans in segments:
            seg = self.encode(text)
            if is_ans:
                starts.append(len(ids))
            ids.extend(seg)
            flags.extend([is_ans] * len(seg))
        return ids, flags, starts, zero_shot

    def batch(self, step: int, batch_size: int, seed: int, micro: int = 0) -> TrainBatch:
        """Micro-batch ``micro`` of training step ``step``: micro-batch 0 is the step's batch
        without gradient accumulation; the others come from their own streams."""
        rng = np.random.default_rng([seed, step] if micro == 0 else [seed, step, micro])
        task_idx = rng.integers(0, len(self.suite), size=batch_size)
        rows = []
        for ti in task_idx:
            n = len(self.suite.tasks[int(ti)])
            idx = rng.choice(n, size=self.k + 1, replace=False)
            rows.append(self.encode_prompt(self.prompt(int(ti), idx, rng)))
        return self.collate(rows, task_idx)

    def collate(self, rows, task_idx) -> TrainBatch:
        width = max(len(r[0]) for r in rows)
        if self.n_ctx is not None and width > self.n_ctx:
            raise PromptError(
                f"Training prompts are {width} tokens, longer than n_ctx={self.n_ctx}: "
                "raise n_ctx or lower k."
            )
        pad = self.tok.pad_token_id
        b = len(rows)
        ids = torch.full((b, width), pad, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        is_ans = torch.zeros((b, width), dtype=torch.bool)
        starts = torch.zeros((b, self.k + 1), dtype=torch.long)
        for i, (r, f, s, _) in enumerate(rows):  # right padding: positions stay 0..len-1
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
            is_ans[i, : len(r)] = torch.tensor(f)
            starts[i] = torch.tensor(s)
        labels = torch.where(is_ans, ids, torch.full_like(ids, IGNORE))
        zwidth = max(len(r[3]) for r in rows)
        zs = torch.full((b, zwidth), pad, dtype=torch.long)
        zmask = torch.zeros((b, zwidth), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: the query is the last column
            zs[i, zwidth - len(r[3]) :] = torch.tensor(r[3])
            zmask[i, zwidth - len(r[3]) :] = 1
        zs_answer = ids[torch.arange(b), starts[:, -1]]
        return TrainBatch(
            ids, mask, labels, starts, torch.as_tensor(task_idx), is_ans, zs, zmask, zs_answer
        )
