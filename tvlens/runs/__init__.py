"""Run and results folders, their one home: the names of the files tvlens writes in them, the
one rule for writing into a folder, JSON writing (:func:`write_json`; atomically:
:func:`tvlens.runs.checkpoints.write_json_atomically`), and checkpoints on disk
(:mod:`tvlens.runs.checkpoints`).

The rule (:func:`prepare_out_dir`): a command writes only into a folder that does not exist
yet, is empty, or already holds a tvlens run of the same kind. Anything else (a file, a user's
folder, another kind of run) is refused before anything is written, so no command overwrites
what it did not write.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tvlens.errors import OutputError

# ---------------------------------------------------------------------------- file names
CONFIG_FILE = "config.json"  # every run: what produced it ({"kind": ..., ...})
METRICS_FILE = "metrics.json"  # training runs: metrics per checkpoint
CHECKPOINTS_DIR = "checkpoints"  # training runs: step-NNNNNNNNN/ model folders
RESULTS_FILE = "results.json"  # vectors
TABLE_FILE = "table.md"  # vectors
VECTORS_DIR = "vectors"  # vectors: {method}/{task}.safetensors
TD_FILE = "td.json"  # probe
PATCHING_FILE = "patching.json"  # patch (and the demo's figures folder)
EMERGENCE_FILE = "emergence.json"  # emergence (and the demo's training run)
PERTURBATION_FILE = "perturbation.json"  # emergence
DEMO_FILE = "demo.json"  # demo figures folder
COMPARISON_FILE = "comparison.json"  # compare
CELLS_DIR = "cells"  # compare: one JSON per (method, seed)
KIND_KEY = "kind"

# Run kinds, as the commands that write them are named.
TRAIN_SYNTHETIC = "train-synthetic"
TRAIN_REGRESSION = "train-regression"
VECTORS = "vectors"
PROBE = "probe"
PATCH = "patch"
EMERGENCE = "emergence"
DEMO = "demo"
FINETUNE = "finetune"
ATV_RUN = "atv"
EVAL = "eval"
COMPARE = "compare"

# The file that marks each kind of results folder, for folders written before config.json
# named its kind (the training kinds are told apart by their config.json).
_MARKERS = (
    (DEMO, DEMO_FILE),
    (VECTORS, RESULTS_FILE),
    (PROBE, TD_FILE),
    (PATCH, PATCHING_FILE),
    (EMERGENCE, EMERGENCE_FILE),
    (COMPARE, COMPARISON_FILE),
    (COMPARE, CELLS_DIR),
)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def folder_kind(path: str | Path) -> str | None:
    """The kind of tvlens run in ``path`` (``"train-synthetic"``, ``"vectors"``, ...), or None
    when it is not one."""
    path = Path(path)
    cfg = _read_json(path / CONFIG_FILE)
    if isinstance(cfg, dict):
        if isinstance(cfg.get(KIND_KEY), str):
            return cfg[KIND_KEY]
        if "tvlens" in cfg and (path / CHECKPOINTS_DIR).is_dir():
            return TRAIN_REGRESSION if cfg.get("family") == "regression" else TRAIN_SYNTHETIC
    for kind, marker in _MARKERS:
        if (path / marker).exists():
            return kind
    return None


def prepare_out_dir(out: str | Path, kind: str) -> Path:
    """Create ``out`` for a run of ``kind`` and check that it can be written, or raise
    :class:`OutputError` when ``out`` is a file, a non-empty folder that is not a run of the
    same kind, or not writable. Returns ``out`` as a Path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(
            f"Output {str(out)!r} is an existing file, not a folder: give a new or empty folder."
        )
    if out.is_dir() and any(out.iterdir()):
        found = folder_kind(out)
        if found != kind:
            what = f"a tvlens {found} run" if found else "files tvlens did not write"
            raise OutputError(
                f"Output folder {str(out)!r} is not empty and holds {what}, not a {kind} run: "
                "give a new or empty folder (nothing in it was changed)."
            )
    if (reason := _unwritable(out)) is not None:
        raise OutputError(
            f"Cannot write to output folder {str(out)!r} ({reason}): give a folder "
            "you can write to."
        )
    return out


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` (created if missing) cannot take a new file, or None when it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return str(e.strerror or e)
    return None


def prepare_out_file(path: str | Path, kind: str) -> Path:
    """The same rule for a command that writes one JSON file: ``path`` may be new or a JSON
    result of the same ``kind``; its folder must be writable."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"Output {str(path)!r} is a folder: give a file name (results.json).")
    if path.exists():
        old = _read_json(path)
        if not (isinstance(old, dict) and old.get(KIND_KEY) == kind):
            raise OutputError(
                f"Output file {str(path)!r} exists and is not a tvlens {kind} result: give a "
                "new file name (it was not changed)."
            )
    if (reason := _unwritable(path.parent)) is not None:
        raise OutputError(f"Cannot write {str(path)!r} ({reason}): give a path you can write to.")
    return path


def write_json(path: str | Path, obj: object) -> Path:
    """``obj`` as indented JSON at ``path`` (folders created; unknown types as strings;
    absolute paths made portable: :func:`tvlens.runs.portable.portable`)."""
    from tvlens.runs.portable import portable

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portable(obj), indent=2, default=str) + "\n")
    return path
