"""Fine-tuning as a training-engine run: only the first k or only the last k blocks of a
checkpoint (Han et al. 2025, Table 1), with full weights or peft LoRA adapters (Hu et al. 2022).

:func:`finetune_layers` writes::

    OUT/config.json              the fine-tuning options
    OUT/metrics.json             loss, accuracy and TD before / after, per row (FinetuneResult)
    OUT/{first,last}/            each tuned model, a folder that ``load_model`` reads
    OUT/training/{first,last}/   the engine's run (checkpoint with the trainable weights and
                                 optimizer state; a call with the same options resumes it)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from tvlens.errors import TVLensError
from tvlens.models.families import family_of_model_type
from tvlens.models.hf import get_peft_model_quietly
from tvlens.plotting import plot_finetune
from tvlens.probing.config import KNN_K
from tvlens.probing.emergence import layer_td
from tvlens.probing.family import NULL, TaskFamily
from tvlens.results import Result
from tvlens.runs import CONFIG_FILE, FINETUNE, KIND_KEY, prepare_out_dir, tidy_on_error
from tvlens.runs.checkpoints import write_json_atomically
from tvlens.training.config import TrainingConfig
from tvlens.training.engine import RunKind, StepData, train_run
from tvlens.training.train import decoder_blocks

TRAINABLE_FILE = "trainable.safetensors"


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
class FinetuneResult(Result):
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

    def to_dataframe(self):
        """One row per tuning (``which``): loss, accuracy and TD before and after."""

        rows = [{k: v for k, v in asdict(r).items() if not k.startswith("td_by_layer")}
                for r in self.rows]  # fmt: skip
        return pd.DataFrame(rows)

    def plot(self, **kwargs):

        return plot_finetune(self, **kwargs)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "k_layers": self.k_layers,
            "rows": [asdict(r) for r in self.rows],
            "config": self.config,
            "table": self.table(),
        }


def _evaluate_family(model, family, n_prompts: int, seed: int, knn_k: int = KNN_K):
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


@tidy_on_error
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
    device: str | None = None,
    eval_family: TaskFamily | None = None,
) -> FinetuneResult:
    """Fine-tune only the first ``k_layers`` or only the last ``k_layers`` blocks of a
    checkpoint on ``family`` (everything else frozen), and report loss, accuracy and TD
    before and after. ``method="full"`` trains those blocks' weights; ``"lora"`` trains
    peft LoRA adapters (rank ``lora_rank``, as the paper's r=16) on their attention and MLP
    matrices, merged into the weights before saving. Each fine-tuning is a training-engine
    run (AdamW without weight decay, constant lr, no clipping) in ``out/training/{which}``;
    calling again with the same options resumes (or reuses) it, other options into the same
    ``out`` are refused. Writes ``out/config.json``, ``out/metrics.json`` and each tuned
    model as a loadable folder ``out/{which}/``.

    ``run`` may also be any model ``load_model`` takes (a pretrained short name or folder):
    training prompts then start as the model's scored prompts do (its BOS policy).
    ``eval_family`` (default ``family``): where loss, accuracy and TD are measured, e.g. the
    same tasks on pairs held out from training (real tasks have a finite set of pairs).
    ``device``: where the blocks are trained; default: the best available, as for
    ``load_model``."""
    if method not in ("full", "lora"):
        raise TVLensError(f"method must be 'full' or 'lora', got {method!r}.")
    for w in which:
        if w not in ("first", "last"):
            raise TVLensError(f"which must be 'first' or 'last', got {w!r}.")

    out = Path(out)
    evals = family if eval_family is None else eval_family
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
        "eval_family": None if eval_family is None else eval_family.describe(),
        "prompt_bos": family.tvmodel(base).prompt_bos,
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
    cfg = TrainingConfig(
        steps=steps, batch_size=batch_size, lr=lr, weight_decay=0.0, warmup_steps=0,
        grad_clip=0.0, seed=seed, n_checkpoints=1, first_checkpoint=steps,
        eval_prompts=n_prompts, log_every=min(10, steps),
    )  # fmt: skip
    prepare_out_dir(out, FINETUNE)
    write_json_atomically(out / CONFIG_FILE, {KIND_KEY: FINETUNE, **config})
    loss0, acc0, td0 = _evaluate_family(base, evals, n_prompts, seed=seed + 1)
    bos_id = family.tvmodel(base).prompt_bos_id
    del base
    rows = []
    for w in which:
        t0 = time.time()
        idx = list(range(k_layers)) if w == "first" else list(range(n_layers - k_layers, n_layers))
        _finetune_blocks(ckpt_dir, family, idx, cfg, method, lora_rank, out, w, progress, device,
                         bos_id)  # fmt: skip
        tuned = family.load(out / w)
        loss1, acc1, td1 = _evaluate_family(tuned, evals, n_prompts, seed=seed + 1)
        rows.append(
            FinetuneRow(w, idx, loss0, loss1, acc0, acc1, max(td0), max(td1), td0, td1,
                        round(time.time() - t0, 1))
        )  # fmt: skip
    res = FinetuneResult(family.kind, k_layers, rows, config)
    res.save(out / "metrics.json")  # FinetuneResult.load(out / "metrics.json") reads it back
    return res


def _finetune_blocks(
    ckpt: Path,
    family: TaskFamily,
    blocks: list[int],
    cfg: TrainingConfig,
    method: str,
    lora_rank: int,
    out: Path,
    which: str,
    progress: bool,
    device: str | None,
    bos_id: int | None = None,
) -> None:
    """Train ``blocks`` of checkpoint ``ckpt`` (everything else frozen) on the engine and
    save the tuned model as ``out/which``."""
    trainable = family.trainable(ckpt)
    trainable.bos_id = bos_id
    torch.manual_seed(cfg.seed)  # LoRA's initialisation draws from it
    for p in trainable.module.parameters():
        p.requires_grad_(False)
    if method == "lora":
        trainable.hf = with_lora(trainable.hf, blocks, lora_rank)  # only adapters need grad
        params = [p for p in trainable.module.parameters() if p.requires_grad]
    else:
        params = [p for i in blocks for p in decoder_blocks(trainable.hf)[i].parameters()]
        for p in params:
            p.requires_grad_(True)
    module = trainable.module
    names = {id(p): n for n, p in module.named_parameters()}
    data_seed = cfg.seed + 17  # the batches are drawn apart from the evaluation prompts
    batches = StepData(
        lambda step, micro: family.train_batch(trainable, step, cfg.batch_size, data_seed, micro)
    )

    def save_trainable(folder: Path, step: int) -> None:
        weights = {names[id(p)]: p.detach().cpu().contiguous() for p in params}
        save_file(weights, str(folder / TRAINABLE_FILE))

    def load_trainable(folder: Path, device: torch.device) -> None:
        module.load_state_dict(
            load_file(str(folder / TRAINABLE_FILE), device=str(device)), strict=False
        )

    kind = RunKind(
        model=module,
        data=batches,
        loss=family.train_loss,
        save=save_trainable,
        load=load_trainable,
        parameters=lambda: params,
        required_files=(TRAINABLE_FILE,),
    )
    run_config = {
        **cfg.to_dict(),
        "checkpoint": str(ckpt),
        "family": family.describe(),
        "which": which,
        "blocks": blocks,
        "method": method,
        "lora_rank": lora_rank if method == "lora" else None,
    }
    run_dir = out / "training" / which
    train_run(kind, cfg, run_dir, {KIND_KEY: FINETUNE, "config": run_config},
              resume=True, device=device, progress=progress, desc=f"finetune {which}")  # fmt: skip
    trainable.module.eval()
    if method == "lora":  # fold the adapters into the weights: a plain HF folder again
        trainable.hf = trainable.hf.merge_and_unload()
    trainable.module.cpu()
    trainable.save(out / which)


def with_lora(hf, blocks: list[int], rank: int):
    """``hf`` with peft LoRA adapters on the attention and MLP matrices of ``blocks`` only
    (the family record's ``lora_targets``)."""
    from peft import LoraConfig

    kind = hf.config.model_type
    family = family_of_model_type(kind)
    if family is None:
        raise TVLensError(f"No LoRA targets known for {kind!r}; use method='full'.")
    cfg = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=list(family.lora_targets),
        layers_to_transform=blocks,
        fan_in_fan_out=family.conv1d,  # GPT-2's Conv1D stores weights transposed
    )
    return get_peft_model_quietly(hf, cfg)
