"""Fine-tuning only the first k or only the last k blocks on a family the model does poorly,
comparing TD and accuracy before / after (the seed paper's Table 1, Han et al. 2025).

Emergence moved to :mod:`tvlens.probing.emergence`, the perturbation test to
:mod:`tvlens.injection.perturbation`, the task families to :mod:`tvlens.probing.family` and the
runners to :mod:`tvlens.probing.run`; fine-tuning moves to the training package.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from tvlens.errors import TVLensError
from tvlens.models.checkpoints import write_json_atomically
from tvlens.probing.emergence import layer_td
from tvlens.probing.family import NULL, TaskFamily

# ---------------------------------------------------------------------------- fine-tuning


@dataclass
class FinetuneRow:
    which: str  # "first" or "last"
    blocks: list[int]
    loss_before: float
    loss_after: float
    accuracy_before: float | None
    accuracy_after: float | None
    td_before: float
    td_after: float
    td_by_layer_before: list[float]
    td_by_layer_after: list[float]
    seconds: float


@dataclass
class FinetuneResult:
    """The paper's Table 1: rows first-k / last-k; loss, accuracy and TD (max over layers)
    before and after fine-tuning only those blocks."""

    kind: str
    k_layers: int
    rows: list[FinetuneRow]
    config: dict = field(default_factory=dict)

    def table(self) -> str:
        head = "| blocks tuned | acc before | acc after | loss before | loss after |"
        lines = [head + " TD before | TD after |", "|---|---|---|---|---|---|---|"]
        f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        for r in self.rows:
            lines.append(
                f"| {r.which} {self.k_layers} ({r.blocks}) | {f(r.accuracy_before)} | "
                f"{f(r.accuracy_after)} | {f(r.loss_before)} | {f(r.loss_after)} | "
                f"{f(r.td_before)} | {f(r.td_after)} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "k_layers": self.k_layers,
            "rows": [asdict(r) for r in self.rows],
            "config": self.config,
            "table": self.table(),
        }


def _evaluate_family(model, family: TaskFamily, n_prompts: int, seed: int, knn_k: int = 10):
    names = family.task_names + [NULL]
    outs = {t: family.run(model, t, n_prompts, seed=seed + 1000 * i) for i, t in enumerate(names)}
    td, _ = layer_td(outs, knn_k)
    loss = float(np.mean([outs[t].loss for t in family.task_names]))
    acc = (
        float(np.mean([outs[t].accuracy for t in family.task_names]))
        if family.has_accuracy
        else None
    )
    return loss, acc, td


def finetune_layers(
    run: str | Path,
    family: TaskFamily,
    out: str | Path,
    k_layers: int = 2,
    which: Sequence[Literal["first", "last"]] = ("first", "last"),
    revision: str | int | None = None,
    steps: int = 200,
    lr: float = 1e-3,
    batch_size: int = 32,
    n_prompts: int = 100,
    seed: int = 0,
    method: str = "full",
    lora_rank: int = 16,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune only the first ``k_layers`` or only the last ``k_layers`` blocks of a
    checkpoint on ``family`` (everything else frozen), and report loss, accuracy and TD
    before and after. ``method="full"`` trains those blocks' weights; ``"lora"`` trains
    peft LoRA adapters (rank ``lora_rank``, as the paper's r=16) on their attention and MLP
    matrices, merged into the weights before saving. Writes ``out/config.json``,
    ``out/metrics.json`` and each tuned model as a loadable folder ``out/{which}/``."""
    from tvlens.synthetic.train import decoder_blocks

    if method not in ("full", "lora"):
        raise TVLensError(f"method must be 'full' or 'lora', got {method!r}.")

    out = Path(out)
    base = family.load(run, revision=revision)
    n_layers = family.tvmodel(base).n_layers
    if not 1 <= k_layers <= n_layers:
        raise TVLensError(f"k_layers must be in 1..{n_layers}, got {k_layers}.")
    ckpt_dir = Path(family.tvmodel(base).spec.path)
    config = {
        "run": str(run),
        "revision": revision,
        "checkpoint": str(ckpt_dir),
        "family": family.describe(),
        "k_layers": k_layers,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "n_prompts": n_prompts,
        "seed": seed,
        "which": list(which),
        "method": method,
        "lora_rank": lora_rank if method == "lora" else None,
        "optimizer": "AdamW(weight_decay=0)",
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / "config.json", config)
    loss0, acc0, td0 = _evaluate_family(base, family, n_prompts, seed=seed + 1)
    del base
    rows = []
    for w in which:
        if w not in ("first", "last"):
            raise TVLensError(f"which must be 'first' or 'last', got {w!r}.")
        t0 = time.time()
        idx = list(range(k_layers)) if w == "first" else list(range(n_layers - k_layers, n_layers))
        trainable = family.trainable(ckpt_dir)
        torch.manual_seed(seed)
        for p in trainable.module.parameters():
            p.requires_grad_(False)
        if method == "lora":
            trainable.hf = _with_lora(trainable.hf, idx, lora_rank)  # only adapters need grad
            params = [p for p in trainable.module.parameters() if p.requires_grad]
        else:
            params = [p for i in idx for p in decoder_blocks(trainable.hf)[i].parameters()]
            for p in params:
                p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        trainable.module.train()
        for step in tqdm(range(1, steps + 1), desc=f"finetune {w}", disable=not progress):
            batch = family.train_batch(trainable, step, batch_size, seed + 17)
            loss = family.train_loss(trainable.module, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        trainable.module.eval()
        if method == "lora":  # fold the adapters into the weights: a plain HF folder again
            trainable.hf = trainable.hf.merge_and_unload()
        trainable.save(out / w)
        tuned = family.load(out / w)
        loss1, acc1, td1 = _evaluate_family(tuned, family, n_prompts, seed=seed + 1)
        rows.append(
            FinetuneRow(
                w,
                idx,
                loss0,
                loss1,
                acc0,
                acc1,
                max(td0),
                max(td1),
                td0,
                td1,
                round(time.time() - t0, 1),
            )
        )
    res = FinetuneResult(family.kind, k_layers, rows, config)
    write_json_atomically(out / "metrics.json", res.to_dict())
    return res


LORA_TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def _with_lora(hf, blocks: list[int], rank: int):
    """``hf`` with peft LoRA adapters on the attention and MLP matrices of ``blocks`` only."""
    from peft import LoraConfig, get_peft_model

    kind = hf.config.model_type
    if kind not in LORA_TARGETS:
        raise TVLensError(f"No LoRA targets known for {kind!r}; use method='full'.")
    cfg = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS[kind],
        layers_to_transform=blocks,
        fan_in_fan_out=kind == "gpt2",  # GPT-2's Conv1D stores weights transposed
    )
    return get_peft_model(hf, cfg)
