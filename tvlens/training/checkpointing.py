"""The training engine's checkpoints: the optimizer and random state beside the model, resuming
from the last complete one, and HF model folders. The run-folder rules (reusing a finished run,
resuming) are :mod:`tvlens.runs.folders`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

import tvlens
from tvlens.errors import CheckpointError
from tvlens.models.hf import quiet_transformers, save_hf_model
from tvlens.runs.checkpoints import (
    CKPT_DIR,
    Checkpoint,
    checkpoint_name,
    clean_temporary,
    list_checkpoints,
    write_atomically,
)
from tvlens.runs.folders import (  # noqa: F401  (their old import path)
    check_run_folder,
    load_run_config,
    run_finished,
)
from tvlens.runs.portable import portable

STATE_FILE = "training_state.pt"


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())  # loaded with map_location=device
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(
    run_dir: Path,
    step: int,
    save: Callable[[Path, int], None],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any = None,
) -> Checkpoint:
    """Write checkpoint ``step`` atomically: the kind's files (``save(folder, step)``) and
    the training state (optimizer, scheduler, RNG, fp16 loss scaler). Only the newest
    checkpoint keeps the training state (it is what resume needs)."""
    final = run_dir / CKPT_DIR / checkpoint_name(step)

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        save(tmp, step)
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
        }
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        torch.save(state, tmp / STATE_FILE)

    write_atomically(final, write)
    for c in list_checkpoints(run_dir):
        if c.step != step and (c.path / STATE_FILE).exists():
            (c.path / STATE_FILE).unlink()
    return Checkpoint(step, final)


def restore_checkpoint(
    run_dir: Path,
    load: Callable[[Path, torch.device], None],
    required_files: Sequence[str],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    metrics: dict[str, Any],
    scaler: Any = None,
) -> tuple[int, dict[str, Any]]:
    """Resume a stopped run from its last complete checkpoint: the kind's weights
    (``load``), optimizer, scheduler and RNG state; returns the step reached and the metrics
    up to it. A run stopped before its first checkpoint starts again from step 0."""
    if not (run_dir / CKPT_DIR).is_dir():
        return 0, metrics
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        return 0, metrics
    last = ckpts[-1].path
    missing = [f for f in (*required_files, STATE_FILE) if not (last / f).is_file()]
    if missing:
        raise CheckpointError(
            f"Checkpoint {str(last)!r} is incomplete or corrupt (missing {missing}): cannot "
            "resume from it. Delete that folder to resume from the one before."
        )
    load(last, device)
    state = torch.load(last / STATE_FILE, map_location=device, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "rng" in state:  # absent in runs written before the engine saved it
        _set_rng_state(state["rng"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    step = int(state["step"])
    path = run_dir / "metrics.json"
    old = json.loads(path.read_text()) if path.is_file() else metrics
    return step, {
        "checkpoints": [c for c in old.get("checkpoints", []) if c["step"] <= step],
        "train_loss": [x for x in old.get("train_loss", []) if x[0] <= step],
    }


def write_hf_folder(folder: Path, hf_model: Any, tokenizer: Any, info: dict[str, Any]) -> None:
    """Write a loadable model folder: the HF model (safetensors), its tokenizer, and
    ``tvlens.json`` (``{"tvlens": version, **info}``)."""
    with quiet_transformers():
        save_hf_model(hf_model, tokenizer, folder)
    info = {"tvlens": tvlens.__version__, **info}
    (folder / "tvlens.json").write_text(json.dumps(portable(info), indent=2) + "\n")


def load_hf_weights(hf_model: Any, folder: Path, device: torch.device | str) -> None:
    """Load the weights of an HF folder written by :func:`write_hf_folder` into ``hf_model``
    (re-tying GPT-2's ``lm_head``, which is tied to the embedding and not saved)."""
    weights = load_file(str(folder / "model.safetensors"), device=str(device))
    hf_model.load_state_dict(weights, strict=False)
    if hasattr(hf_model, "tie_weights"):
        hf_model.tie_weights()


__all__ = [
    "STATE_FILE",
    "check_run_folder",
    "clean_temporary",
    "load_hf_weights",
    "load_run_config",
    "restore_checkpoint",
    "save_checkpoint",
    "write_hf_folder",
]
