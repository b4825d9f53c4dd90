"""Train a small transformer from scratch on ICL prompts, writing a checkpoint series.

The run folder looks like this (every checkpoint loads with :func:`tvlens.models.load_model`)::

    OUT/config.json                  {"tvlens": version, "preset": ..., "config": {...}}
    OUT/metrics.json                 {"checkpoints": [{"step", "loss", "icl_accuracy", ...}]}
    OUT/checkpoints/step-000000750/  HF folder + tvlens.json (+ training_state.pt on the last)

Checkpoints are written atomically; ``resume=True`` continues from the last complete one and
reaches the same final weights as an uninterrupted run (batches depend on the step only, and
the optimizer state is saved with the weights).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import einops
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

import tvlens
from tvlens.errors import CheckpointError, TVLensError
from tvlens.models.checkpoints import (
    Checkpoint,
    checkpoint_name,
    clean_temporary,
    list_checkpoints,
    validate_checkpoint,
    write_atomically,
    write_json_atomically,
)
from tvlens.models.hf import build_hf_model, quiet_transformers
from tvlens.models.loading import default_device
from tvlens.models.tokenizer import build_word_tokenizer
from tvlens.tasks.registry import get_suite
from tvlens.tasks.synthetic import synthetic_vocabulary
from tvlens.training.config import TrainConfig, checkpoint_steps, get_preset
from tvlens.training.data import ICLBatcher, TrainBatch

STATE_FILE = "training_state.pt"


@dataclass
class TrainResult:
    run_dir: Path
    config: TrainConfig
    checkpoints: list[Checkpoint]
    metrics: dict
    completed: bool
    seconds: float

    @property
    def final(self) -> Checkpoint:
        return self.checkpoints[-1]


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

    handle = decoder_blocks(model)[layer].register_forward_hook(replace_last)
    try:
        mask = batch.zs_attention_mask
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=batch.zs_input_ids, attention_mask=mask, position_ids=pos).logits
    finally:
        handle.remove()
    return F.cross_entropy(logits[:, -1], batch.zs_answer)


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:  # linear warm-up, then constant (DESIGN.md 4 uses constant lr)
        return min(1.0, (step + 1) / max(cfg.warmup_steps, 1))

    return f


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


def save_checkpoint(
    run_dir: Path,
    step: int,
    hf_model,
    tokenizer,
    optimizer,
    scheduler,
    info: dict,
    extra: Callable[[Path], None] | None = None,
) -> Checkpoint:
    """Write checkpoint ``step`` atomically: the HF folder, ``tvlens.json`` (``info``), the
    optimizer state, and whatever ``extra(folder)`` adds (the regression read-in). Only the
    newest checkpoint keeps the optimizer state (it is what resume needs)."""
    final = run_dir / "checkpoints" / checkpoint_name(step)
    info = {"tvlens": tvlens.__version__, "step": step, **info}

    def write(tmp: Path) -> None:
        with quiet_transformers():
            hf_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
        (tmp / "tvlens.json").write_text(json.dumps(info, indent=2) + "\n")
        torch.save(
            {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            },
            tmp / STATE_FILE,
        )

    write_atomically(final, write)
    for c in list_checkpoints(run_dir):
        if c.step != step and (c.path / STATE_FILE).exists():
            (c.path / STATE_FILE).unlink()
    return Checkpoint(step, final)


def optimizer_step(
    model: torch.nn.Module,
    loss: Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    grad_clip: float,
    step: int,
) -> float:
    """One clipped AdamW step on ``loss``; its value, or an error if it is not finite."""
    value = loss.item()
    if not math.isfinite(value):
        raise TVLensError(f"Loss became {value} at step {step}: lower the lr.")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    return value


def check_run_folder(run_dir: Path, config: dict, resume: bool) -> dict | None:
    """The run config already in ``run_dir`` (None for a new run), after checking that it may
    be continued: ``resume`` asked for, and the same configuration."""
    existing = load_run_config(run_dir)
    if existing is not None:
        if not resume:
            raise TVLensError(
                f"{str(run_dir)!r} already holds a training run. Pass resume=True "
                "(--resume) to continue it, or choose another output folder."
            )
        if existing.get("config") != config:
            raise TVLensError(
                f"The run in {str(run_dir)!r} was started with a different configuration; "
                "resume with the same preset and options, or use another output folder."
            )
    return existing


def restore_run(
    run_dir: Path,
    load_weights: Callable[[Path], None],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: Any,
    metrics: dict[str, Any],
) -> tuple[int, dict[str, Any]]:
    """Resume a stopped run from its last complete checkpoint: weights (``load_weights``),
    optimizer and scheduler state; returns the step reached and the metrics up to it (the
    training loops of the token and regression families share this)."""
    clean_temporary(run_dir)
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        return 0, metrics
    last = ckpts[-1].path
    validate_checkpoint(last)
    state_path = last / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(
            f"Checkpoint {str(last)!r} has no {STATE_FILE}: cannot resume from it."
        )
    load_weights(last)
    state = torch.load(state_path, map_location=device, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    step = int(state["step"])
    path = run_dir / "metrics.json"
    old = json.loads(path.read_text()) if path.is_file() else metrics
    return step, {
        "checkpoints": [c for c in old.get("checkpoints", []) if c["step"] <= step],
        "train_loss": [x for x in old.get("train_loss", []) if x[0] <= step],
    }


def load_run_config(run_dir: Path) -> dict | None:
    """A run folder's ``config.json`` (None when there is none yet)."""
    p = run_dir / "config.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(p)!r} is corrupt: {e}") from None


def train_synthetic(
    out: str | Path,
    preset: str = "default",
    config: TrainConfig | None = None,
    resume: bool = False,
    device: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    **overrides: Any,
) -> TrainResult:
    """Train a model from scratch on synthetic ICL tasks and save a checkpoint series.

    Args:
        out: Run folder (created).
        preset: ``"tiny"`` (seconds, tests), ``"default"`` (CPU demo), ``"gpu"``.
        config: A full :class:`TrainConfig` instead of a preset.
        resume: Continue an existing run in ``out`` from its last complete checkpoint.
        device: ``"cuda"``, ``"cpu"``...; default: the best available.
        stop_after: Stop (as if killed) once this step is done, without finishing the run.
        overrides: Any :class:`TrainConfig` field, e.g. ``steps=2000``, ``seed=1``.
    """
    t0 = time.time()
    run_dir = Path(out)
    cfg = (config or get_preset(preset)).with_overrides(**overrides)
    preset_name = None if config is not None else preset
    existing = check_run_folder(run_dir, cfg.to_dict(), resume)
    start_step = 0
    device = device or default_device()
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
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    metrics: dict[str, Any] = {"checkpoints": [], "train_loss": []}

    if existing is not None:

        def load_weights(ckpt: Path) -> None:
            weights = load_file(str(ckpt / "model.safetensors"), device=str(device))
            model.load_state_dict(weights, strict=False)
            if hasattr(model, "tie_weights"):  # GPT-2's lm_head is tied, not saved
                model.tie_weights()

        start_step, metrics = restore_run(
            run_dir, load_weights, optimizer, scheduler, device, metrics
        )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomically(
            run_dir / "config.json",
            {
                "tvlens": tvlens.__version__,
                "preset": preset_name,
                "config": cfg.to_dict(),
                "vocab_size": len(tokenizer),
                "device": str(device),
            },
        )

    save_at = set(checkpoint_steps(cfg))
    eval_batch = _eval_batch(batcher, cfg).to(device)
    names = suite.names
    model.train()
    bar = tqdm(
        range(start_step + 1, cfg.steps + 1),
        initial=start_step,
        total=cfg.steps,
        desc=f"train {run_dir.name}",
        disable=not progress,
    )
    running: list[float] = []
    completed = True
    for step in bar:
        batch = batcher.batch(step, cfg.batch_size, cfg.seed).to(device)
        out_ = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=cfg.tv_loss_weight > 0,
        )
        loss = answer_loss(out_.logits, batch.labels)
        if cfg.tv_loss_weight > 0:
            tv_layer = cfg.tv_loss_layer if cfg.tv_loss_layer is not None else cfg.n_layers // 2
            loss = loss + cfg.tv_loss_weight * tv_prompting_loss(
                model, batch, out_.hidden_states, tv_layer
            )
        running.append(optimizer_step(model, loss, optimizer, scheduler, cfg.grad_clip, step))
        if step % cfg.log_every == 0:
            metrics["train_loss"].append([step, float(np.mean(running))])
            running = []
        if step in save_at:
            ev = evaluate_checkpoint(model, eval_batch, names)
            metrics["checkpoints"].append({"step": step, **ev})
            info = {"preset": preset_name, "suite": cfg.suite, "k": cfg.k,
                    "template": cfg.template, "arch": cfg.arch}  # fmt: skip
            save_checkpoint(run_dir, step, model, tokenizer, optimizer, scheduler, info)
            write_json_atomically(run_dir / "metrics.json", metrics)
            bar.set_postfix(loss=f"{ev['loss']:.3f}", icl_acc=f"{ev['mean_icl_accuracy']:.2f}")
        if stop_after is not None and step >= stop_after and step < cfg.steps:
            completed = False
            break
    bar.close()
    return TrainResult(
        run_dir, cfg, list_checkpoints(run_dir), metrics, completed, time.time() - t0
    )
