"""Train a small transformer from scratch on ICL prompts, writing a checkpoint series.

The run folder looks like this (every checkpoint loads with :func:`tvlens.models.load_model`)::

    OUT/config.json                  {"tvlens": version, "preset": ..., "config": {...}}
    OUT/metrics.json                 {"checkpoints": [{"step", "loss", "icl_accuracy", ...}]}
    OUT/checkpoints/step-000000750/  HF folder + tvlens.json (+ training_state.pt on the last)

The loop, checkpoints and resume are the training engine's (:mod:`tvlens.training.engine`);
this module is the token ICL run kind: its model, batches, loss and evaluation.
"""

from __future__ import annotations

from typing import Any

import einops
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from tvlens.errors import TVLensError
from tvlens.models.hf import build_hf_model
from tvlens.models.tokenizer import build_word_tokenizer
from tvlens.runs import KIND_KEY, TRAIN_SYNTHETIC
from tvlens.tasks.registry import get_suite
from tvlens.tasks.synthetic import synthetic_vocabulary
from tvlens.training.checkpointing import (
    load_hf_weights,
    load_run_config,
    write_hf_folder,
)
from tvlens.training.config import TrainConfig
from tvlens.training.data import ICLBatcher, TrainBatch
from tvlens.training.engine import RunKind, StepData, TrainResult

__all__ = [
    "TrainResult",
    "answer_loss",
    "decoder_blocks",
    "evaluate_checkpoint",
    "icl_loss",
    "load_run_config",
    "run_vocabulary",
    "same_task_partner",
    "token_kind",
    "tv_prompting_loss",
]


def run_vocabulary(cfg: TrainConfig, suite) -> list[str]:
    """Symbols s0..s63, all 5-bit numbers, and every word of the training suite."""
    n_sym = max(64, int(cfg.suite.get("n_symbols", 0)))
    return synthetic_vocabulary(n_symbols=n_sym, n_bits=5, extra_words=sorted(suite.words()))


def decoder_blocks(model) -> torch.nn.ModuleList:
    """The list of transformer blocks of an HF causal LM (gpt2: ``h``; llama/neox: ``layers``)."""
    base = model.base_model
    for name in ("h", "layers"):
        blocks = getattr(base, name, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return blocks
    raise TVLensError(f"Cannot find the decoder blocks of {type(model).__name__}.")


def same_task_partner(task_index: Int[Tensor, " batch"]) -> Int[Tensor, " batch"]:
    """For each row, another row of the same task (the next one of that task, cyclically);
    a row alone with its task is its own partner."""
    partner = torch.arange(len(task_index), device=task_index.device)
    for t in task_index.unique():
        rows = (task_index == t).nonzero().flatten()
        partner[rows] = rows.roll(-1)
    return partner


def tv_prompting_loss(model, batch: TrainBatch, hidden: tuple, layer: int) -> Float[Tensor, ""]:
    """Cross-entropy of zero-shot prompts whose last-token residual after block ``layer`` is
    replaced by the one of *another* ICL prompt of the same task (a dummy query, as in Hendel
    et al.): the vector must carry the task, and the query must be read from its own token.
    Gradients flow into both runs."""
    rows = same_task_partner(batch.task_index)
    query_pos = batch.answer_start[:, -1] - 1
    vec = hidden[layer + 1][rows, query_pos[rows]]  # hidden[0] is the embedding output

    def replace_last(module, args, output):
        hs = output[0] if isinstance(output, tuple) else output
        hs = torch.cat([hs[:, :-1], vec[:, None].to(hs.dtype)], dim=1)
        return (hs, *output[1:]) if isinstance(output, tuple) else hs

    block = decoder_blocks(getattr(model, "module", model))[layer]  # unwrapped from DDP
    handle = block.register_forward_hook(replace_last)
    try:
        mask = batch.zs_attention_mask
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=batch.zs_input_ids, attention_mask=mask, position_ids=pos).logits
    finally:
        handle.remove()
    return F.cross_entropy(logits[:, -1], batch.zs_answer)


def _eval_batch(batcher: ICLBatcher, cfg: TrainConfig) -> TrainBatch:
    """A fixed batch of ``eval_prompts`` prompts per task (seeded apart from training)."""
    rng = np.random.default_rng([cfg.seed, 2**31 - 1])
    rows, tidx = [], []
    for ti, task in enumerate(batcher.suite):
        for _ in range(cfg.eval_prompts):
            idx = rng.choice(len(task), size=cfg.k + 1, replace=False)
            rows.append(batcher.encode_prompt(batcher.prompt(ti, idx, rng)))
            tidx.append(ti)
    return batcher.collate(rows, np.array(tidx))


def answer_loss(
    logits: Float[Tensor, "batch pos vocab"], labels: Int[Tensor, "batch pos"]
) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over the answer tokens (labels != -100)."""
    return F.cross_entropy(
        einops.rearrange(logits[:, :-1], "b p v -> (b p) v"),
        einops.rearrange(labels[:, 1:], "b p -> (b p)"),
        ignore_index=-100,
    )


def icl_loss(
    model: torch.nn.Module, batch: TrainBatch, tv_loss_weight: float = 0.0, tv_loss_layer: int = 0
) -> Float[Tensor, ""]:
    """The token family's training loss: next-token cross-entropy on every answer token,
    plus ``tv_loss_weight`` times the task-vector prompting loss at ``tv_loss_layer``."""
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        output_hidden_states=tv_loss_weight > 0,
    )
    value = answer_loss(out.logits, batch.labels)
    if tv_loss_weight > 0:
        tv = tv_prompting_loss(model, batch, out.hidden_states, tv_loss_layer)
        value = value + tv_loss_weight * tv
    return value


@torch.no_grad()
def evaluate_checkpoint(model, batch: TrainBatch, task_names: list[str]) -> dict[str, Any]:
    """Loss on answer tokens, query accuracy per task, and accuracy at each demonstration
    index (index 0 cannot be inferred from context: it stays near chance when the model does
    ICL rather than memorise)."""
    was_training = model.training
    model.eval()
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    model.train(was_training)
    loss = answer_loss(logits, batch.labels)
    pred = logits.argmax(-1)
    rows = torch.arange(batch.input_ids.shape[0], device=pred.device)[:, None]
    starts = batch.answer_start
    correct = (pred[rows, starts - 1] == batch.input_ids[rows, starts]).float().cpu()
    tidx = batch.task_index.cpu()
    icl = {name: float(correct[tidx == i, -1].mean()) for i, name in enumerate(task_names)}
    return {
        "loss": float(loss),
        "icl_accuracy": icl,
        "mean_icl_accuracy": float(np.mean(list(icl.values()))),
        "accuracy_by_demo": [float(x) for x in correct.mean(0)],
    }


def token_kind(cfg: TrainConfig, preset_name: str | None = None) -> tuple[RunKind, dict]:
    """The token ICL run kind of ``cfg`` (a fresh model) and its ``config.json`` fields."""
    torch.manual_seed(cfg.seed)
    suite = get_suite(**cfg.suite)
    tokenizer = build_word_tokenizer(run_vocabulary(cfg, suite))
    batcher = ICLBatcher(suite, tokenizer, cfg.k, cfg.template, n_ctx=cfg.n_ctx)
    model = build_hf_model(
        cfg.arch,
        len(tokenizer),
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        n_ctx=cfg.n_ctx,
        n_kv_heads=cfg.n_kv_heads,
        d_mlp=cfg.d_mlp,
        seed=cfg.seed,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    eval_batch = _eval_batch(batcher, cfg)
    tv_layer = cfg.tv_loss_layer if cfg.tv_loss_layer is not None else cfg.n_layers // 2
    info = {"preset": preset_name, "suite": cfg.suite, "k": cfg.k,
            "template": cfg.template, "arch": cfg.arch}  # fmt: skip

    def evaluate(m: torch.nn.Module, step: int) -> dict[str, Any]:
        return evaluate_checkpoint(m, eval_batch.to(m.device), suite.names)

    kind = RunKind(
        model=model,
        data=StepData(lambda step, micro: batcher.batch(step, cfg.batch_size, cfg.seed, micro)),
        loss=lambda m, batch: icl_loss(m, batch, cfg.tv_loss_weight, tv_layer),
        save=lambda folder, step: write_hf_folder(folder, model, tokenizer, {"step": step, **info}),
        load=lambda folder, device: load_hf_weights(model, folder, device),
        evaluate=evaluate,
        postfix=lambda ev: {
            "loss": f"{ev['loss']:.3f}",
            "icl_acc": f"{ev['mean_icl_accuracy']:.2f}",
        },
    )
    run_info = {
        KIND_KEY: TRAIN_SYNTHETIC,
        "preset": preset_name,
        "config": cfg.to_dict(),
        "vocab_size": len(tokenizer),
    }
    return kind, run_info
