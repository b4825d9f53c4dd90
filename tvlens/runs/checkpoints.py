"""Checkpoint series of tvlens training runs, laid out like Pythia's revisions.

A run folder holds ``config.json`` (with a ``"tvlens"`` key), ``metrics.json`` and
``checkpoints/step-000000750/`` folders, each a complete HF model folder (``config.json``,
``model.safetensors``, tokenizer files, ``tvlens.json``). A checkpoint is written to a
hidden temporary folder and renamed into place, so a killed run never leaves a half-written
checkpoint under a name that loads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tvlens.errors import CheckpointError
from tvlens.runs.portable import portable

CKPT_DIR = "checkpoints"
_STEP_RE = re.compile(r"^step-(\d+)$")
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tvlens.json")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path

    @property
    def revision(self) -> str:
        """The name ``load_model(run, revision=...)`` takes (Pythia style)."""
        return f"step{self.step}"


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


def is_run_dir(path: str | Path) -> bool:
    """A tvlens training-run folder (as opposed to a single model folder)."""
    path = Path(path)
    cfg = path / "config.json"
    if not cfg.is_file() or not (path / CKPT_DIR).is_dir():
        return False
    try:
        return "tvlens" in json.loads(cfg.read_text())
    except (json.JSONDecodeError, OSError):
        return False


def validate_checkpoint(path: str | Path) -> Path:
    """Raise :class:`CheckpointError` unless ``path`` is a complete checkpoint folder."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"Checkpoint folder {str(path)!r} does not exist.")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is incomplete or corrupt (missing {missing}). "
            "Delete it, or resume the run (`tvlens train-synthetic --resume`) to rewrite it."
        )
    return path


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Checkpoints of a run, oldest first. Temporary folders of an interrupted write are
    ignored; a ``step-N`` folder that is incomplete is listed (and fails validation when
    loaded) rather than silently skipped, so damage is reported, not hidden."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        raise CheckpointError(
            f"{str(run_dir)!r} has no {CKPT_DIR}/ folder: not a tvlens training run."
        )
    out = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir():
            out.append(Checkpoint(int(m.group(1)), p))
    return sorted(out, key=lambda c: c.step)


def resolve_checkpoint(run_dir: str | Path, revision: str | int | None = None) -> Checkpoint:
    """The checkpoint of a run named by ``revision``: ``None``/``"final"``/``"main"`` (last),
    ``"step750"``, ``750``, or a negative index (``-1`` last, ``-2`` the one before...)."""
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(f"Run {str(run_dir)!r} has no complete checkpoint yet.")
    if revision is None or revision in ("final", "main", "last"):
        chosen = ckpts[-1]
    elif isinstance(revision, int) and revision < 0:
        if -revision > len(ckpts):
            raise CheckpointError(f"Run has {len(ckpts)} checkpoints; index {revision} invalid.")
        chosen = ckpts[revision]
    else:
        s = str(revision)
        m = re.fullmatch(r"(?:step-?)?(\d+)", s)
        if not m:
            raise CheckpointError(
                f"Bad revision {revision!r}: use 'final', 'step<N>', N or a negative index."
            )
        step = int(m.group(1))
        by_step = {c.step: c for c in ckpts}
        if step not in by_step:
            raise CheckpointError(
                f"Run {str(run_dir)!r} has no checkpoint at step {step}. "
                f"Available steps: {[c.step for c in ckpts]}."
            )
        chosen = by_step[step]
    validate_checkpoint(chosen.path)
    return chosen


def write_atomically(final: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh hidden folder next to ``final``, then rename it to
    ``final`` (an atomic ``rename`` on one file system). An existing ``final`` is replaced."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        write(tmp)
        for f in tmp.iterdir():  # flush file contents before the rename makes them visible
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def clean_temporary(run_dir: str | Path) -> None:
    """Remove leftovers of a killed run (``.tmp-*`` / ``.old-*`` folders)."""
    root = Path(run_dir) / CKPT_DIR
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)


def write_json_atomically(path: str | Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(portable(obj), indent=2) + "\n")
    os.replace(tmp, path)
    return path
