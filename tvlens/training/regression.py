"""Training of the regression task family's read-in/read-out model on the training engine.

Run folder (as :mod:`tvlens.training.train`)::

    OUT/config.json   {"tvlens", "family": "regression", "preset", "config", "mixture", "device"}
    OUT/metrics.json  {"checkpoints": [{"step", "loss", "task_loss": {task: mse}, ...}]}
    OUT/checkpoints/step-NNNNNNNNN/  HF folder + tokenizer + tvlens.json + read_in.safetensors
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tvlens.models.hf import build_hf_model
from tvlens.models.regression import READ_IN_FILE, ReadInOutModel, RegressionModel
from tvlens.models.tokenizer import build_word_tokenizer
from tvlens.runs import KIND_KEY, TRAIN_REGRESSION
from tvlens.tasks.regression import (
    RegressionMixture,
    interleave,
    predictions_at_x,
    regression_batch,
)
from tvlens.training.checkpointing import load_hf_weights, write_hf_folder
from tvlens.training.config import pick_preset
from tvlens.training.engine import RunKind, StepData, TrainResult, train_from_preset
from tvlens.training.regression_config import DEFAULT_REGRESSION_PRESET, RegressionConfig

REGRESSION_PRESETS: dict[str, RegressionConfig] = {
    # Seconds: tests and the notebook's fast path.
    "tiny": RegressionConfig(
        n_points=8,
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_mlp=64,
        steps=120,
        batch_size=32,
        lr=3e-3,
        warmup_steps=10,
        n_checkpoints=4,
        eval_prompts=32,
    ),
    # CPU-sized (docs/results/papers.md has the measured curve): the half-size mixture, a 3-layer
    # Llama (rotary positions make the previous-token step of the x -> y lookup easy; GPT-2
    # and Llama both sat on the plateau longer at full size).
    "cpu": RegressionConfig(
        mixture="orthogonal4-small",
        arch="llama",
        n_points=10,
        n_layers=3,
        d_model=64,
        n_heads=4,
        d_mlp=256,
        steps=20000,
        batch_size=64,
        lr=1e-3,
        n_checkpoints=30,
    ),
    # Han et al. 2025 / Garg et al. 2022: 12 layers, 8 heads, d_model 256, batch 128, Adam
    # lr 1e-4. For a GPU.
    "paper": RegressionConfig(
        n_layers=12,
        d_model=256,
        n_heads=8,
        d_mlp=1024,
        steps=50000,
        batch_size=128,
        lr=1e-4,
        warmup_steps=0,
        n_checkpoints=40,
        eval_prompts=256,
        log_every=100,
    ),
}


def get_regression_preset(name: str) -> RegressionConfig:
    return pick_preset(REGRESSION_PRESETS, name, "regression ")


def build_regression_model(cfg: RegressionConfig, device: str = "cpu") -> ReadInOutModel:
    """A fresh read-in/read-out model of ``cfg`` (seeded by ``cfg.seed``)."""
    hf = build_hf_model(
        cfg.arch,
        1,
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        n_ctx=cfg.n_ctx,
        d_mlp=cfg.d_mlp,
        seed=cfg.seed,
        bos_token_id=0,
        pad_token_id=0,
    )
    return ReadInOutModel(hf, cfg.get_mixture().d_in, cfg.d_model, seed=cfg.seed).to(device)


@torch.no_grad()
def evaluate_regression(
    model: ReadInOutModel | RegressionModel,
    mix: RegressionMixture,
    n_prompts: int,
    n_points: int,
    seed: int,
) -> dict[str, Any]:
    """MSE per task over all predicted points and at the last query, and the MSE by
    position (averaged over tasks). Baseline: predicting 0 gives ``rank`` (+ noise)."""
    task_loss, query_loss, query_nmse, by_pos = {}, {}, {}, []
    was = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    for t, name in enumerate(mix.names):
        x, y, w = mix.sample(t, n_prompts, n_points, seed=seed + 7919 * t)
        tokens = interleave(x, y)
        if isinstance(model, RegressionModel):
            pred = model.predict(tokens)
        else:
            pred = model(tokens.to(next(model.parameters()).device))
        err = (predictions_at_x(pred).cpu() - y) ** 2
        task_loss[name] = float(err.mean())
        query_loss[name] = float(err[:, -1].mean())
        # Normalised by E[y_q^2 | w]: 1 = predicting 0, comparable across tasks.
        query_nmse[name] = float(err[:, -1].sum() / ((w**2).sum(-1) + mix.noise_std**2).sum())
        by_pos.append(err.mean(0))
    if isinstance(model, nn.Module):
        model.train(was)
    return {
        "loss": float(np.mean(list(task_loss.values()))),
        "task_loss": task_loss,
        "query_loss": query_loss,
        "query_nmse": query_nmse,
        "mse_by_position": [float(v) for v in torch.stack(by_pos).mean(0)],
    }


def regression_loss(
    model: nn.Module, batch: tuple[Float[Tensor, "n seq d_in"], Float[Tensor, "n points"]]
) -> Float[Tensor, ""]:
    """The regression family's training loss: MSE of the predictions at every ``x``."""
    tokens, y = batch
    return torch.nn.functional.mse_loss(predictions_at_x(model(tokens)), y)


RegressionTrainResult = TrainResult  # one result type for every run kind


def train_regression(
    out: str | Path,
    preset: str = DEFAULT_REGRESSION_PRESET,
    config: RegressionConfig | None = None,
    resume: bool = False,
    device: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    **overrides: Any,
) -> TrainResult:
    """Train a read-in/read-out transformer on the regression mixture; same folder layout,
    atomic checkpoints at log-spaced steps and exact resume as
    :func:`~tvlens.training.runner.train_synthetic`."""
    return train_from_preset(
        TRAIN_REGRESSION, regression_kind, get_regression_preset, out, preset, config, overrides,
        resume=resume, device=device, stop_after=stop_after, progress=progress,
    )  # fmt: skip


def regression_kind(cfg: RegressionConfig, preset_name: str | None = None) -> tuple[RunKind, dict]:
    """The regression run kind of ``cfg`` (a fresh model) and its ``config.json`` fields."""
    mix = cfg.get_mixture()
    torch.manual_seed(cfg.seed)
    tokenizer = build_word_tokenizer([])  # the bridge wants one; inputs are vectors
    model = build_regression_model(cfg)
    info = {
        "family": "regression",
        "preset": preset_name,
        "mixture": mix.to_dict(),
        "n_points": cfg.n_points,
        "arch": cfg.arch,
    }

    def batch(step: int, micro: int):
        tokens, y, _ = regression_batch(mix, step, cfg.batch_size, cfg.n_points, cfg.seed, micro)
        return tokens, y

    def save(folder: Path, step: int) -> None:
        write_hf_folder(folder, model.hf, tokenizer, {"step": step, **info})
        weights = {k: v.detach().cpu().contiguous() for k, v in model.read_in.state_dict().items()}
        save_file(weights, str(folder / READ_IN_FILE))

    def load(folder: Path, device: torch.device) -> None:
        load_hf_weights(model.hf, folder, device)
        model.read_in.load_state_dict(load_file(str(folder / READ_IN_FILE), device=str(device)))

    kind = RunKind(
        model=model,
        data=StepData(batch),
        loss=regression_loss,
        save=save,
        load=load,
        evaluate=lambda m, step: evaluate_regression(
            m, mix, cfg.eval_prompts, cfg.n_points, seed=10_000_019
        ),
        postfix=lambda ev: {"mse": f"{ev['loss']:.3f}"},
    )
    run_info = {
        KIND_KEY: TRAIN_REGRESSION,
        "family": "regression",
        "preset": preset_name,
        "config": cfg.to_dict(),
        "mixture": mix.to_dict(),
    }
    return kind, run_info
