"""The training engine's run folder: ``config.json``, checkpoints with the optimizer state,
resuming from the last complete one, and reusing a finished run (see
:func:`check_run_folder`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

import tvlens
from tvlens.errors import CheckpointError, TVLensError
from tvlens.models.checkpoints import (
    CKPT_DIR,
    Checkpoint,
    checkpoint_name,
    clean_temporary,
    list_checkpoints,
    write_atomically,
)
from tvlens.models.hf import quiet_transformers, save_hf_model

STATE_FILE = "training_state.pt"


def load_run_config(run_dir: str | Path) -> dict | None:
    """A run folder's ``config.json`` (None when there is none yet)."""
    p = Path(run_dir) / "config.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(p)!r} is corrupt: {e}") from None


def run_finished(run_dir: str | Path, config: dict) -> bool:
    """Whether the run in ``run_dir`` reached its last step: its newest checkpoint (the last
    step always writes one) is at the configuration's ``steps``. False when the
    configuration has no ``steps`` to compare with (then only ``resume=True`` continues it)."""
    steps = config.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool):
        return False
    if not (Path(run_dir) / CKPT_DIR).is_dir():
        return False
    ckpts = list_checkpoints(run_dir)
    return bool(ckpts) and ckpts[-1].step >= steps


def _config_diff(old: Any, new: dict) -> str:
    if not isinstance(old, dict):
        return ""
    keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
    shown = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys[:4])
    return f" ({shown}{', ...' if len(keys) > 4 else ''})" if keys else ""


def check_run_folder(run_dir: Path, config: dict, resume: bool, kind: str) -> dict | None:
    """The run config already in ``run_dir`` (None for a new run), after checking that it may
    be continued or reused. A folder that holds anything but a run of ``kind`` is refused
    (:func:`tvlens.runs.prepare_out_dir`).

    Rules (so that a notebook cell or a script can be run again):

    - a different configuration is an error, with or without ``resume``;
    - the same configuration, finished (:func:`run_finished`): allowed; the engine reloads
      the last checkpoint, trains no step, and returns the run as it is;
    - the same configuration, unfinished: continued with ``resume=True``, else an error
      (nothing is continued that the caller did not ask to continue).
    """
    from tvlens.runs import prepare_out_dir

    prepare_out_dir(run_dir, kind)
    existing = load_run_config(run_dir)
    if existing is not None:
        if existing.get("config") != config:
            raise TVLensError(
                f"The run in {str(run_dir)!r} was started with a different configuration"
                f"{_config_diff(existing.get('config'), config)}; run again with the same "
                "preset and options to reuse or resume it, or use another output folder."
            )
        if not resume and not run_finished(run_dir, config):
            ckpts = list_checkpoints(run_dir) if (run_dir / CKPT_DIR).is_dir() else []
            where = f" (stopped at step {ckpts[-1].step})" if ckpts else ""
            raise TVLensError(
                f"{str(run_dir)!r} already holds this training run, unfinished{where}. Pass "
                "resume=True (--resume) to continue it, or choose another output folder."
            )
    return existing


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
    (folder / "tvlens.json").write_text(json.dumps(info, indent=2) + "\n")


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
