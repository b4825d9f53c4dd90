"""Paths a user names (a model folder, a suite folder or file): whether a name is a path,
and one line for a path that is not there, naming what its folder does hold. No torch, so the
loaders check names before anything heavy is imported."""

from __future__ import annotations

import difflib
from pathlib import Path


def written_as_path(name: str | Path) -> bool:
    """Whether a name is written as a path (``./``, ``/``, ``~``, a backslash), not a short
    or hub name."""
    text = str(name)
    return text.startswith((".", "/", "~")) or "\\" in text


def is_path_name(name: str | Path) -> bool:
    """Whether a model name means a local path: written as one, existing, a ``.gguf`` file,
    a name whose first component exists here (``runs/tny`` when ``runs/`` exists), or one of
    more than two components (a hub name has two)."""
    text = str(name)
    if isinstance(name, Path) or written_as_path(text) or text.lower().endswith(".gguf"):
        return True
    path = Path(text).expanduser()
    if path.exists():
        return True
    parts = path.parts
    # A hub name is "org/name": more folders than that, or a first one that exists, is a path.
    return len(parts) > 2 or (len(parts) > 1 and Path(parts[0]).exists())


def listing(folder: Path, limit: int = 8) -> list[str]:
    try:
        names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []
    return names[:limit] + (["..."] if len(names) > limit else [])


MODEL_FIX = "Give an existing folder or file, a tvlens run, a short name or an HF hub name."


def missing_path_message(name: str | Path, what: str = "Model folder", fix: str = MODEL_FIX) -> str:
    """One line for a path that does not exist, naming what its nearest existing parent
    folder holds and the closest entry (``runs/`` has no ``tny``; did you mean ``runs/tiny``)."""
    text = str(name)
    path = Path(text).expanduser()
    missing, parent = path.name, path.parent
    while not parent.exists() and parent != parent.parent:  # the nearest folder that exists
        missing, parent = parent.name, parent.parent
    shown = "./" if str(parent) in ("", ".") else str(parent).rstrip("/") + "/"
    msg = f"{what} {text!r} does not exist"
    if parent.is_dir():
        entries = listing(parent, limit=1000)
        close = difflib.get_close_matches(missing, entries, n=1, cutoff=0.6)
        held = listing(parent)
        msg += f": {shown!r} has no {missing!r}"
        msg += f"; it has {', '.join(repr(e) for e in held)}" if held else " and is empty"
        if close:
            near = Path(text).parent if missing == path.name else parent  # as the user wrote it
            msg += f". Did you mean {str(near / close[0])!r}?"
        else:
            msg += "."
    else:
        msg += "."
    return f"{msg} {fix}"
