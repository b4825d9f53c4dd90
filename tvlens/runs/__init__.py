"""Run and results folders, their one home: the names of the files tvlens writes in them, the
one rule for writing into a folder, JSON writing (:func:`write_json`; atomically:
:func:`tvlens.runs.checkpoints.write_json_atomically`), and checkpoints on disk
(:mod:`tvlens.runs.checkpoints`).

The rule (:func:`prepare_out_dir`): a command writes only into a folder that does not exist
yet, is empty, or already holds a tvlens run of the same kind, known by tvlens's signature
(:data:`RUN_MARKER`, or a ``config.json`` tvlens wrote), never by a file's name. Anything else
(a file, a user's folder, another kind of run, a run of a tvlens older than the signature:
:func:`adopt_folder`) is refused before anything is written, so no command overwrites what
it did not write. One file (a result's ``save()``, a figure, a vector) is written by the same
rule (:func:`claim_file`): new, in a tvlens run folder, or signed by tvlens itself. A command
that fails before writing removes the folders it created (:func:`tidy_on_error`).
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from tvlens import __version__
from tvlens.errors import OutputError
from tvlens.runs.portable import portable

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
MODEL = "model"  # a model folder written by tvlens.models.save_hf_model

# Pretrained-model experiments (``tvlens pretrained ...``).
PRETRAINED_VECTORS = "pretrained-vectors"
PRETRAINED_DECODABILITY = "pretrained-decodability"
PRETRAINED_HEADS = "pretrained-heads"
PRETRAINED_FINETUNE = "pretrained-finetune"
KINDS = frozenset({TRAIN_SYNTHETIC, TRAIN_REGRESSION, VECTORS, PROBE, PATCH, EMERGENCE, DEMO,
                   FINETUNE, ATV_RUN, EVAL, COMPARE, MODEL, "train", PRETRAINED_VECTORS,
                   PRETRAINED_DECODABILITY, PRETRAINED_HEADS, PRETRAINED_FINETUNE})  # fmt: skip

# Kinds written as one JSON file, not a folder (prepare_out_file).
FILE_KINDS = frozenset({EVAL})

# tvlens's signature in a folder it writes into: written by prepare_out_dir before anything
# else, so that the folder is known as tvlens's whatever the files in it are named.
RUN_MARKER = ".tvlens-run.json"  # {"kind": ..., "tvlens": version}
VERSION_KEY = "tvlens"
RESULT_KEY = "tvlens_result"  # in a file written by a result's save() (tvlens.results)

# The file names the runs of older tvlens versions (before RUN_MARKER) were known by. A name
# alone is never a signature: a folder holding one of them and no signature is refused with
# a line saying how to reuse it (adopt_folder), never written into.
LEGACY_MARKERS = (DEMO_FILE, RESULTS_FILE, TD_FILE, PATCHING_FILE, EMERGENCE_FILE,
                  COMPARISON_FILE, CELLS_DIR)  # fmt: skip


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _version() -> str:
    return __version__


def folder_kind(path: str | Path) -> str | None:
    """The kind of tvlens run in ``path`` (``"train-synthetic"``, ``"vectors"``, ...), or None
    when it is not one. Only tvlens's own signature counts: its marker file
    (:data:`RUN_MARKER`), or a ``config.json`` that tvlens wrote (its ``kind`` with the tvlens
    version, or one of tvlens's kinds); a file name alone (``results.json``...) never does."""
    path = Path(path)
    marker = _read_json(path / RUN_MARKER)
    if isinstance(marker, dict) and isinstance(marker.get(KIND_KEY), str):
        return marker[KIND_KEY]
    cfg = _read_json(path / CONFIG_FILE)
    if isinstance(cfg, dict):
        kind = cfg.get(KIND_KEY)
        if isinstance(kind, str) and (VERSION_KEY in cfg or kind in KINDS):
            return kind
        if isinstance(cfg.get(VERSION_KEY), str) and (path / CHECKPOINTS_DIR).is_dir():
            # training runs written before config.json named its kind
            return TRAIN_REGRESSION if cfg.get("family") == "regression" else TRAIN_SYNTHETIC
    return None


def adopt_folder(path: str | Path, kind: str) -> Path:
    """Mark ``path``, a results folder written by a tvlens older than its signature
    (:data:`RUN_MARKER`), as a tvlens run of ``kind``, so that the command of that kind may
    reuse it and write into it again. Only for a folder you know tvlens wrote: its files
    may then be overwritten."""
    path = Path(path)
    if not path.is_dir():
        raise OutputError(f"{str(path)!r} is not a folder: adopt_folder takes a results folder.")
    if kind not in KINDS:
        raise OutputError(f"Unknown run kind {kind!r}: one of {', '.join(sorted(KINDS))}.")
    found = folder_kind(path)
    if found is not None and found != kind:
        raise OutputError(f"{str(path)!r} is already a tvlens {found} run, not a {kind} run.")
    _write_marker(path, kind)
    return path


def _write_marker(folder: Path, kind: str) -> None:
    if (folder / RUN_MARKER).exists():
        return
    (folder / RUN_MARKER).write_text(json.dumps({KIND_KEY: kind, VERSION_KEY: _version()}) + "\n")


# Folders prepare_out_dir signed in this process (newest last), with the topmost folder it
# had to create for each (None: the folder was there, empty): a command that fails before
# writing removes them, or only its signature (discard_unused_folders), so that no failed
# command leaves an empty folder behind.
_created: list[tuple[Path, Path | None]] = []


def prepare_out_dir(out: str | Path, kind: str) -> Path:
    """Create ``out`` for a run of ``kind`` and sign it (:data:`RUN_MARKER`), or raise
    :class:`OutputError` when ``out`` is a file, a non-empty folder without tvlens's signature
    of the same kind (:func:`folder_kind`), or not writable. Nothing is written or changed in
    a refused folder. Returns ``out`` as a Path."""
    out = check_out_dir(out, kind)
    top = _missing_top(out)
    if (reason := _unwritable(out)) is not None:
        raise OutputError(
            f"Cannot write to output folder {str(out)!r} ({reason}): give a folder "
            "you can write to."
        )
    if not (out / RUN_MARKER).exists():
        _write_marker(out, kind)
        _created.append((out, top))
    return out


def check_out_dir(out: str | Path, kind: str) -> Path:
    """:func:`prepare_out_dir`'s refusals, without creating or writing anything (the CLI
    runs it before torch is imported, so that a wrong ``--out`` is answered at once)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(
            f"Output {str(out)!r} is an existing file, not a folder: give a new or empty folder."
        )
    if out.is_dir() and any(out.iterdir()):
        found = folder_kind(out)
        if found is None:
            legacy = [n for n in LEGACY_MARKERS if (out / n).exists()]
            if legacy:
                raise OutputError(
                    f"Output folder {str(out)!r} holds {legacy[0]} but not tvlens's signature "
                    f"({RUN_MARKER}): it is your own or an older tvlens's, and nothing in it was "
                    "changed. Give a new or empty --out; to reuse an older tvlens run there, "
                    f"run tvlens.runs.adopt_folder({str(out)!r}, {kind!r}) first."
                )
            raise OutputError(
                f"Output folder {str(out)!r} is not empty and holds files tvlens did not "
                f"write, not a {kind} run: give a new or empty folder (nothing in it was changed)."
            )
        if found != kind:
            raise OutputError(
                f"Output folder {str(out)!r} is not empty and holds a tvlens {found} run, not "
                f"a {kind} run: give a new or empty folder (nothing in it was changed)."
            )
    return out


def _missing_top(folder: Path) -> Path | None:
    """The topmost folder of ``folder``'s path that does not exist yet (None: it exists)."""
    top = None
    for p in (folder, *folder.parents):
        if p.exists():
            break
        top = p
    return top


def created_count() -> int:
    """How many folders :func:`prepare_out_dir` signed so far (for
    :func:`discard_unused_folders`)."""
    return len(_created)


def discard_unused_folders(since: int = 0) -> list[Path]:
    """Remove the folders :func:`prepare_out_dir` created (after the first ``since``) that
    hold nothing but tvlens's signature, what a command that failed before writing leaves
    (from a folder that was there, empty, only the signature). Returns the removed folders."""
    removed = []
    for out, top in reversed(_created[since:]):
        if not out.is_dir() or any(p.name != RUN_MARKER for p in out.iterdir()):
            continue
        (out / RUN_MARKER).unlink(missing_ok=True)
        if top is None:  # the user's empty folder: left as it was
            continue
        for p in (out, *out.parents):  # the folders it created, up to the topmost
            try:
                p.rmdir()
            except OSError:
                break
            removed.append(p)
            if p == top:
                break
    del _created[since:]
    return removed


def tidy_on_error(fn):
    """``fn`` (a runner that writes an output folder) removing, when it fails, the folders it
    created and did not write into (:func:`discard_unused_folders`)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        since = created_count()
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            discard_unused_folders(since)
            raise
        del _created[since:]  # done: what it made is its output
        return result

    return run


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
    result of the same ``kind`` signed by tvlens; its folder must be writable."""
    path = check_out_file(path, kind)
    if (reason := _unwritable(path.parent)) is not None:
        raise OutputError(f"Cannot write {str(path)!r} ({reason}): give a path you can write to.")
    return path


def check_out_file(path: str | Path, kind: str) -> Path:
    """:func:`prepare_out_file`'s refusals, without writing anything."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"Output {str(path)!r} is a folder: give a file name (results.json).")
    if path.exists():
        old = _read_json(path)
        if not (isinstance(old, dict) and old.get(KIND_KEY) == kind and _signed_json(old)):
            raise OutputError(
                f"Output file {str(path)!r} exists and is not a tvlens {kind} result: give a "
                "new file name (it was not changed)."
            )
    return path


def _signed_json(data: object) -> bool:
    return isinstance(data, dict) and (RESULT_KEY in data or VERSION_KEY in data)


def _signed_file(path: Path) -> bool:
    """Whether the file at ``path`` carries tvlens's signature itself: JSON written by a
    result's save() or with the tvlens version; safetensors with tvlens's metadata."""
    if path.suffix == ".safetensors":
        try:
            with path.open("rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(min(n, 1 << 24)))
            return VERSION_KEY in header.get("__metadata__", {})
        except (OSError, ValueError, AttributeError):
            return False
    if path.suffix == ".json":
        return _signed_json(_read_json(path))
    return False


def in_run_folder(path: str | Path, depth: int = 4) -> bool:
    """Whether ``path`` lies in a tvlens run folder (one of its ``depth`` nearest parents is
    signed: :func:`folder_kind`)."""
    for parent in list(Path(path).parents)[:depth]:
        if folder_kind(parent) is not None:
            return True
    return False


def claim_file(path: str | Path) -> Path:
    """The rule for writing one file: ``path`` may be written when it does not exist yet,
    lies in a tvlens run folder (:func:`in_run_folder`), or is a file tvlens signed; anything
    else (a user's file) raises :class:`OutputError` and is left as it was."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{str(path)!r} is a folder: give a file name to write.")
    if path.exists() and not (in_run_folder(path) or _signed_file(path)):
        raise OutputError(
            f"{str(path)!r} exists and was not written by tvlens: give another path "
            "(it was not changed)."
        )
    return path


def write_json(path: str | Path, obj: object) -> Path:
    """``obj`` as indented JSON at ``path`` (folders created; unknown types as strings;
    absolute paths made portable: :func:`tvlens.runs.portable.portable`); a file tvlens did not
    write is not overwritten (:func:`claim_file`)."""
    path = claim_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portable(obj), indent=2, default=str) + "\n")
    return path
