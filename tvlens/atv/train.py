"""Train an ATV generator against a frozen target, on tvlens's training engine.

The run folder::

    OUT/config.json                   {"tvlens", "preset", "kind": "atv", "config": {...}}
    OUT/metrics.json                  {"checkpoints": [{"step", "epoch", "dev": {...}}], ...}
    OUT/checkpoints/step-NNNNNNNNN/   atv.safetensors (+ training_state.pt on the newest)
    OUT/atv.safetensors               the final generator + expansion, with its metadata

One checkpoint per epoch, each with the dev accuracy; ``resume=True`` continues a stopped
run from its last complete checkpoint (same weights as an uninterrupted run on CPU).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvlens.atv.config import DEFAULT_PRESET, ATVConfig, get_preset
from tvlens.atv.data import SYNTHETIC_TARGET, ATVSplits, get_atv_suite, split_queries
from tvlens.atv.model import ATV, WEIGHTS_FILE
from tvlens.errors import TVLensError
from tvlens.models.loading import default_device, load_model
from tvlens.models.tvmodel import TVModel
from tvlens.runs import ATV_RUN, KIND_KEY, prepare_out_dir, tidy_on_error
from tvlens.runs.folders import load_run_config
from tvlens.training import train_synthetic
from tvlens.training.engine import EpochData, RunKind, train_run


@dataclass
class ATVTrainResult:
    run_dir: Path
    config: ATVConfig
    atv: ATV
    splits: ATVSplits
    metrics: dict
    completed: bool
    seconds: float

    def __str__(self) -> str:
        last = self.metrics["checkpoints"][-1] if self.metrics.get("checkpoints") else {}
        return (f"ATV ({self.atv.trainable_parameters()} trainable parameters) in "
                f"{self.run_dir} ({self.seconds:.0f} s); dev accuracy "
                f"{last.get('mean_dev_accuracy', float('nan')):.3f}")  # fmt: skip


def run_device(device: str | None) -> tuple[str, bool]:
    """The device this process trains on and whether it is the main process: accelerate's
    under ``accelerate launch`` with several processes (as the engine decides), else
    ``device`` or the best available."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        cpu = not torch.cuda.is_available() or torch.device(device or "cuda").type == "cpu"
        state = PartialState(cpu=cpu)
        return str(state.device), state.is_main_process
    return device or default_device(), True


def train_synthetic_target(
    out: str | Path, device: str | None = None, resume: bool = False, progress: bool = True
) -> Path:
    """The synthetic setting's target (:mod:`tvlens.atv.data`): the ``tiny`` tvlens model
    trained on first / last of symbol lists; reused when ``out`` already holds it.
    ``device``: None picks the best available, as everywhere."""

    out = Path(out)
    done = load_run_config(out) is not None and (out / "checkpoints").is_dir()
    res = train_synthetic(
        out, preset="tiny", device=device, resume=resume or done, progress=progress,
        **SYNTHETIC_TARGET,
    )  # fmt: skip
    return res.run_dir


def load_models(cfg: ATVConfig, device: str, target: TVModel | None = None):
    """The frozen target and the generator LM (a separate copy of the target when the
    config names no generator). The target runs in bf16 when training under bf16."""
    dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" and device != "cpu" else None
    if target is None:
        target = load_model(cfg.target, revision=cfg.target_revision, device=device, dtype=dtype)
    gen_name = cfg.generator or cfg.target
    gen_rev = cfg.generator_revision if cfg.generator else cfg.target_revision
    generator = load_model(gen_name, revision=gen_rev, device=device)
    return target, generator


def build_atv(cfg: ATVConfig, target: TVModel, generator: TVModel) -> ATV:
    return ATV.build(
        target,
        generator,
        layers=cfg.layers,
        scale=cfg.scale,
        positions=cfg.positions,
        rank=cfg.rank,
        pooling=cfg.pooling,
        train_generator=cfg.train_generator,
        generator_stop_at_layer=cfg.generator_stop_at_layer,
        generator_input=cfg.generator_input,
        template=cfg.template,
        seed=cfg.seed,
    )


def make_splits(cfg: ATVConfig) -> ATVSplits:
    suite = get_atv_suite(cfg.suite)
    return split_queries(suite, cfg.n_train, cfg.n_dev, cfg.n_test, cfg.template, cfg.seed)


def dev_metrics(atv: ATV, prompts: list) -> dict[str, Any]:
    """Dev accuracy per task (first token) and its mean."""
    first, _ = atv.correctness(prompts)
    names = np.array([p.task for p in prompts])
    per = {t: float(first[names == t].mean()) for t in dict.fromkeys(names.tolist())}
    return {"dev_accuracy": per, "mean_dev_accuracy": float(np.mean(list(per.values())))}


@tidy_on_error
def train_atv(
    out: str | Path,
    preset: str = DEFAULT_PRESET,
    config: ATVConfig | None = None,
    resume: bool = False,
    device: str | None = None,
    target_model: TVModel | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    **overrides: Any,
) -> ATVTrainResult:
    """Train an ATV and save it in ``out``.

    Args:
        out: Run folder (created).
        preset: ``"tiny"``, ``"cpu"`` or ``"gpu"`` (see :mod:`tvlens.atv.config`).
        config: A full :class:`ATVConfig` instead of a preset.
        resume: Continue a stopped run in ``out``.
        target_model: The target already loaded (must be the one the config names).
        stop_after: Stop (as if killed) after this optimizer step.
        overrides: Any :class:`ATVConfig` field, e.g. ``target="runs/x"``, ``rank=8``.
    """
    t0 = time.time()
    run_dir = Path(out)
    cfg = (config or get_preset(preset)).with_overrides(**overrides)
    if not cfg.target:
        raise TVLensError("No target model: pass target=... (--target).")
    prepare_out_dir(run_dir, ATV_RUN)  # before minutes of model loading (the engine re-checks)
    device, is_main = run_device(device)
    torch.manual_seed(cfg.seed)
    target, generator = load_models(cfg, device, target_model)
    atv = build_atv(cfg, target, generator)
    splits = make_splits(cfg)
    train = splits.train

    def save(folder: Path, step: int) -> None:
        atv.save(folder / WEIGHTS_FILE, extra={"step": step})

    def load(folder: Path, dev: torch.device) -> None:
        atv.load_weights(folder / WEIGHTS_FILE)

    kind = RunKind(
        model=atv.generator,
        data=EpochData(
            n_examples=len(train),
            collate=lambda idx: atv.batch([train[int(i)] for i in idx]),
            epochs=cfg.epochs,
        ),
        loss=lambda model, batch: atv.loss(batch, generator=model),
        save=save,
        load=load,
        evaluate=lambda model, step: dev_metrics(atv, splits.dev),
        postfix=lambda ev: {"dev_acc": f"{ev['mean_dev_accuracy']:.2f}"},
        required_files=(WEIGHTS_FILE,),
    )
    header = {"preset": None if config is not None else preset, KIND_KEY: ATV_RUN,
              "config": cfg.to_dict(), "splits": splits.counts()}  # fmt: skip
    result = train_run(
        kind, cfg, run_dir, header, device=device, resume=resume,
        stop_after=stop_after, progress=progress, checkpoints="epoch",
        desc=f"atv {run_dir.name}",
    )  # fmt: skip
    if result.completed and is_main:
        final = result.final.path / WEIGHTS_FILE
        tmp = run_dir / (WEIGHTS_FILE + ".tmp")
        shutil.copyfile(final, tmp)
        tmp.replace(run_dir / WEIGHTS_FILE)
    return ATVTrainResult(
        run_dir, cfg, atv, splits, result.metrics, result.completed, time.time() - t0
    )
