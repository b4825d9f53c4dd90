"""The rules of a training run's folder: its ``config.json``, whether the run finished, and
whether it may be reused or resumed (:func:`check_run_folder`), so that a notebook cell or a
script can be run again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tvlens.errors import CheckpointError, TVLensError
from tvlens.runs import prepare_out_dir
from tvlens.runs.checkpoints import CKPT_DIR, list_checkpoints
from tvlens.runs.portable import portable


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
    prepare_out_dir(run_dir, kind)
    existing = load_run_config(run_dir)
    if existing is not None:
        # Compared as written: paths in the config are stored portable (tvlens.runs.portable).
        if existing.get("config") not in (config, portable(config)):
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
