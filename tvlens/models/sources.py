"""What kind of source a model name is, worked out offline and before torch is imported.

:func:`model_source` reads a name the way :func:`~tvlens.models.load_model` will load it, and
refuses a bad one in one line within a fraction of a second (no torch, TransformerLens or
network): the loaders in :mod:`tvlens.models.loading` only ever see a source that exists.

The rules, in order:

1. Not a string or a path: a model object (``object``), wrapped as it is.
2. A tvlens short name (``smollm2-135m``, case-insensitive): ``pretrained``.
3. A path: a name written as one (``./x``, ``/x``, ``~/x``, a backslash), one that exists, or
   one whose first component exists here (``runs/tny`` when ``runs/`` exists), or one of more
   than two components (a hub name is ``org/name``). A missing path
   is refused naming what its parent folder does hold. An existing path is a ``run`` (tvlens
   training run), a ``checkpoint`` (tvlens checkpoint folder), a ``folder`` (an HF
   ``save_pretrained`` folder) or a ``gguf`` file (``*.gguf``).
4. Otherwise an HF hub name (``hub``). It loads from the local HF cache without asking. It is
   looked up on the hub only when the user allows the network: ``allow_hub=True`` (CLI:
   ``TVLENS_ALLOW_HUB=1``) and ``HF_HUB_OFFLINE`` not set. Otherwise the name is refused with
   "did you mean" for close short names and local folders; with the network allowed but out of
   reach, one look-up without retries says so.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tvlens.errors import CheckpointError, ConfigError, ModelLoadError
from tvlens.models.pretrained import PRETRAINED, PretrainedModel
from tvlens.runs.checkpoints import is_run_dir
from tvlens.runs.paths import is_path_name, listing, missing_path_message

ALLOW_HUB_ENV = "TVLENS_ALLOW_HUB"
_TRUE = {"1", "true", "yes", "on"}

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.txt",
)


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``kind`` is one of ``object``, ``pretrained``, ``gguf``,
    ``run``, ``checkpoint``, ``folder``, ``hub`` (or ``dir``: a folder not yet classified);
    ``path`` is set for the path kinds, ``entry`` for ``pretrained``, ``cached`` for a hub
    name in the local HF cache."""

    kind: str
    name: str
    path: Path | None = None
    entry: PretrainedModel | None = None
    cached: bool = False


def _env_true(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in _TRUE


def hub_allowed(allow_hub: bool | None = None) -> bool:
    """Whether a model name may be looked up on the HF hub: ``allow_hub`` (else
    ``$TVLENS_ALLOW_HUB``) and not ``$HF_HUB_OFFLINE`` / ``$TRANSFORMERS_OFFLINE``."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return False
    return bool(allow_hub) if allow_hub is not None else _env_true(ALLOW_HUB_ENV)


def suggest(name: str) -> list[str]:
    """Close tvlens short names, and close folders here, for a name that matched nothing."""
    key = name.strip().lower()
    hits = difflib.get_close_matches(key, sorted(PRETRAINED), n=2, cutoff=0.75)
    hubs = {e.hub_name.lower(): e.hub_name for e in PRETRAINED.values()}
    hits += [hubs[h] for h in difflib.get_close_matches(key, sorted(hubs), n=1, cutoff=0.85)]
    here = [p for p in listing(Path("."), limit=1000) if Path(p).is_dir()]
    hits += ["./" + h for h in difflib.get_close_matches(name, here, n=1, cutoff=0.75)]
    return hits


def hub_cache_folder(name: str) -> Path:
    """The local HF cache folder of a hub model (it may not exist)."""
    from huggingface_hub import constants  # light: no network, no torch

    return Path(constants.HF_HUB_CACHE) / ("models--" + name.replace("/", "--"))


def hub_cached(name: str, revision: str | None = None) -> bool:
    """Whether the hub model ``name`` (at ``revision``: a branch, tag or commit) has a snapshot
    with a config in the local HF cache."""
    folder = hub_cache_folder(name)
    snapshots = folder / "snapshots"
    if not snapshots.is_dir():
        return False
    if revision is None:
        revision = "main"
    ref = folder / "refs" / str(revision)
    commit = ref.read_text().strip() if ref.is_file() else str(revision)
    if (snapshots / commit / "config.json").exists():
        return True
    # No ref for "main" (a cache filled by snapshot_download of a commit): any snapshot will do.
    return revision == "main" and any((s / "config.json").exists() for s in snapshots.iterdir())


def _hub_refusal(name: str, revision: Any) -> str:
    at = f" at revision {revision!r}" if revision is not None else ""
    why = (
        "HF_HUB_OFFLINE is set"
        if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
        else f"hub downloads are off: allow them with allow_hub=True or {ALLOW_HUB_ENV}=1"
    )
    msg = (
        f"Model {name!r} is not a local path, a tvlens short name (see `tvlens models`) or a "
        f"model in the local HF cache{at}, and {why}."
    )
    hits = suggest(name)
    if hits:
        msg += f" Did you mean {' or '.join(repr(h) for h in hits)}?"
    return msg


def _folder_kind(path: Path, name: str, revision: Any, tokenizer_given: bool) -> str:
    """``run``, ``checkpoint`` or ``folder`` for an existing folder; the cheap checks of each."""
    if is_run_dir(path):
        return "run"
    if (path / "tvlens.json").is_file():
        return "checkpoint"
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{name!r} is not a model folder: no config.json. Expected an HF folder "
            "(save_pretrained), a tvlens checkpoint, or a tvlens run folder."
        )
    if revision is not None:
        raise ConfigError(
            f"revision= applies to hub models and tvlens runs, not to the plain "
            f"model folder {name!r}: leave out revision= (--revision)."
        )
    if _is_run_config(path / "config.json"):
        raise CheckpointError(
            f"{name!r} is a tvlens run without its checkpoints/ folder (deleted, or "
            "never written): train it again, or give another run."
        )
    if not tokenizer_given and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(
            f"Model folder {name!r} has no tokenizer files (none of "
            f"{', '.join(TOKENIZER_FILES)}): save the tokenizer beside the model "
            "(tokenizer.save_pretrained(folder)) or pass tokenizer=."
        )
    return "folder"


def _is_run_config(path: Path) -> bool:
    """A tvlens run's config.json (``{"tvlens": ..., "config": ...}``), not a model's."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(cfg, dict) and "tvlens" in cfg


def folder_source(
    source: ModelSource, revision: Any, checkpoints: bool, tokenizer_given: bool
) -> ModelSource:
    """A ``dir`` source (an existing folder) as a ``run``, ``checkpoint`` or ``folder``, with
    the cheap checks of each (config.json, tokenizer files, ``revision``)."""
    if source.kind != "dir":
        return source
    if checkpoints:
        raise ConfigError(
            "checkpoint_value/checkpoint_index are for hub models; "
            "for a tvlens run use revision='step<N>'."
        )
    kind = _folder_kind(source.path, source.name, revision, tokenizer_given)
    return replace(source, kind=kind)


def _path_source(name: str, revision: Any, checkpoints: bool, tokenizer_given: bool, classify):
    path = Path(name).expanduser()
    if path.is_dir():
        folder = ModelSource("dir", name, path)
        return folder_source(folder, revision, checkpoints, tokenizer_given) if classify else folder
    if name.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(missing_path_message(name, "GGUF file"))
        if revision is not None or checkpoints:
            raise ModelLoadError(f"{name!r} is a GGUF file: it has no revisions or checkpoints.")
        return ModelSource("gguf", name, path)
    if path.exists():
        raise ModelLoadError(
            f"{name!r} is a file, not a model folder: give the folder that holds config.json "
            "(or a .gguf file)."
        )
    raise ModelLoadError(missing_path_message(name))


def model_source(
    name_or_path: Any,
    revision: Any = None,
    *,
    checkpoints: bool = False,
    tokenizer_given: bool = False,
    allow_hub: bool | None = None,
    classify: bool = True,
) -> ModelSource:
    """The kind of source ``name_or_path`` is (see the module's rules), or one clear
    :class:`~tvlens.errors.TVLensError`; no torch, no network. ``checkpoints``: a
    ``checkpoint_value`` / ``checkpoint_index`` was given; ``tokenizer_given``: a
    ``tokenizer=`` replaces the folder's own; ``classify=False`` leaves an existing folder as
    kind ``dir`` for :func:`folder_source` to classify later."""
    if not isinstance(name_or_path, str | Path):
        return ModelSource("object", type(name_or_path).__name__)
    name = str(name_or_path)
    if not name.strip():
        raise ModelLoadError("The model name is empty: give a short name, folder or hub name.")
    key = name.strip().lower()
    if key in PRETRAINED and not Path(name).exists():
        if revision is not None or checkpoints:
            raise ModelLoadError(
                f"{name!r} is a fixed pretrained model: it has no revisions or checkpoints."
            )
        return ModelSource("pretrained", name, entry=PRETRAINED[key])
    if is_path_name(name_or_path):
        return _path_source(name, revision, checkpoints, tokenizer_given, classify)
    if revision is not None and checkpoints:
        raise ConfigError("Specify either revision= or checkpoint_value/checkpoint_index.")
    cached = hub_cached(name, None if revision is None else str(revision))
    if not cached and not hub_allowed(allow_hub):
        raise ModelLoadError(_hub_refusal(name, revision))
    return ModelSource("hub", name, cached=cached)


def check_model_name(name: Any, allow_hub: bool | None = None) -> None:
    """Refuse a model name that cannot load (missing path, unknown name with the hub off)
    before anything heavy is imported: what the CLI runs first. Folder contents are left to
    the loader, which knows the ``revision`` and ``tokenizer`` it was given."""
    if isinstance(name, str | Path) and str(name) and not Path(str(name)).expanduser().is_dir():
        model_source(name, allow_hub=allow_hub)
