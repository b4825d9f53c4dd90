"""Paths in the JSON tvlens writes, without the machine they were written on.

Results get committed, shared and read on other machines: an absolute path (``/home/me/...``,
a virtualenv, a temporary folder) tells the reader nothing and leaks the writer's machine.
:func:`portable` rewrites every absolute path in a JSON-able object:

* under the current folder: relative to it (``runs/default``), which is how Python resolves a
  relative path, so a reader in the same folder still finds it;
* under the home folder: ``~/...`` (``Path.expanduser`` reads it back);
* under a Python installation (site-packages: a package's data file), this one or any other:
  ``<site-packages>/...``;
* under the temporary folder: ``<tmp>/...`` (gone after the run anyway);
* else unchanged (a path the user chose on a shared disk).

Every JSON writer in tvlens goes through it (:func:`tvlens.runs.write_json`,
:func:`tvlens.runs.checkpoints.write_json_atomically`, ``Result.save``...).
"""

from __future__ import annotations

import os
import site
import sysconfig
import tempfile
from pathlib import Path, PurePath
from typing import Any

# Longest first, so that a virtualenv inside the current folder or home reads as a package
# folder rather than as ``.venv/lib/python3.11/...``.
_PACKAGE_DIRS = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
                 *getattr(site, "getsitepackages", list)()}  # fmt: skip
_PACKAGE_DIRS |= {os.path.realpath(d) for d in _PACKAGE_DIRS}  # a virtualenv behind a link


def _under(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` ('' for root itself), or None when not under it."""
    root = root.rstrip(os.sep) or os.sep
    if path == root:
        return ""
    prefix = root if root.endswith(os.sep) else root + os.sep
    return path[len(prefix) :] if path.startswith(prefix) else None


def portable_path(path: str) -> str:
    """One absolute path, rewritten as the module docstring says (other strings unchanged)."""
    if not (isinstance(path, str) and os.path.isabs(path)) or "\n" in path or len(path) > 4096:
        return path
    norm = os.path.normpath(path)
    for root in sorted(_PACKAGE_DIRS, key=len, reverse=True):
        if root and (rest := _under(norm, os.path.normpath(root))) is not None:
            return "<site-packages>" + (f"/{rest}" if rest else "")
    # another Python installation's (a package file recorded by another virtualenv, e.g. in a
    # model cache's metadata): its site-packages part is as machine-specific as ours
    marker = f"{os.sep}site-packages{os.sep}"
    if marker in norm:
        return "<site-packages>/" + norm.split(marker, 1)[1]
    rest = _under(norm, os.path.normpath(os.getcwd()))
    if rest is not None:
        return rest or "."
    for root, name in ((tempfile.gettempdir(), "<tmp>"), (str(Path.home()), "~")):
        rest = _under(norm, os.path.normpath(os.path.realpath(root)))
        if rest is None:
            rest = _under(norm, os.path.normpath(root))
        if rest is not None:
            return name + (f"/{rest}" if rest else "")
    return path


def portable(obj: Any) -> Any:
    """``obj`` (dicts, lists, tuples, strings, paths, numbers...) with every absolute path
    rewritten by :func:`portable_path`; other values unchanged."""
    if isinstance(obj, str):
        return portable_path(obj)
    if isinstance(obj, PurePath):
        return portable_path(str(obj))
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    return obj


_PLACEHOLDERS = (("<site-packages>", sysconfig.get_paths()["purelib"]),
                 ("<tmp>", tempfile.gettempdir()), ("~", str(Path.home())))  # fmt: skip


def local_path(path: str) -> str:
    """The inverse of :func:`portable_path` on this machine, for paths read back into
    objects (``Result.load``): ``<tmp>/x``, ``~/x``, ``<site-packages>/x`` made absolute here;
    relative paths stay relative (to the current folder, as Python reads them)."""
    if not isinstance(path, str):
        return path
    for name, root in _PLACEHOLDERS:
        if path == name or path.startswith(name + "/"):
            return root + path[len(name) :]
    return path


def local(obj: Any) -> Any:
    """``obj`` with every :func:`local_path` applied (the inverse of :func:`portable`)."""
    if isinstance(obj, str):
        return local_path(obj)
    if isinstance(obj, dict):
        return {k: local(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [local(v) for v in obj]
    return obj
