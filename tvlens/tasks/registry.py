"""Suites by name, so that the CLI and saved runs can rebuild them from a small spec."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tvlens.errors import UnknownTaskError
from tvlens.runs.paths import is_path_name, missing_path_message
from tvlens.tasks.core import Task, TaskSuite
from tvlens.tasks.synthetic import bitwise_suite, latent_mapping_suite, list_suite
from tvlens.tasks.words import word_suite

# The function-vector paper's 56 task files (Todd et al. 2023, MIT; README and LICENSE beside
# them), shipped with the package: ``abstractive/`` and ``extractive/``.
FV_DATA_DIR = Path(__file__).parent / "data" / "function_vectors"

_SUITES: dict[str, Callable[..., TaskSuite]] = {
    "latent": latent_mapping_suite,
    "bitwise": bitwise_suite,
    "lists": list_suite,
    "words": word_suite,
}


def available_suites() -> list[str]:
    return sorted(_SUITES)


def describe_suites(name: str | None = None) -> str:
    """What ``tvlens suites`` prints: each built-in suite (or only ``name``, a suite name or
    folder) with its tasks' sizes and first example."""
    lines = []
    for sname in [name] if name else available_suites():
        s = get_suite(sname)
        lines.append(f"{sname}: {s.description}")
        for t in s:
            ex = t.examples[0]
            lines.append(f"  {t.name:18s} {len(t):5d} examples  e.g. {ex.input!r} -> {ex.output!r}")
    return "\n".join(lines)


def _suite_path(name: str) -> Path | None:
    """The folder or task file a suite name means (``fv/...`` inside the package), or None
    for a registered name; a path that does not exist is refused naming what its folder holds
    (no torch: what the CLI and the runners check before loading a model)."""
    if name in _SUITES:
        return None
    if name.startswith("fv/") and (FV_DATA_DIR / name[3:]).is_dir():
        return FV_DATA_DIR / name[3:]
    path = Path(name).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".json"):
        return path
    if path.is_file():
        raise UnknownTaskError(
            f"Suite {name!r} is a file but not a .json task file: give a suite name, a folder "
            "of {task}.json files, or one task .json file."
        )
    if is_path_name(name) or name.lower().endswith(".json"):
        fix = "Give a suite name, a folder of {task}.json files, or one task .json file."
        raise UnknownTaskError(missing_path_message(name, "Suite folder or file", fix))
    close = difflib.get_close_matches(name, [*available_suites(), "fv/abstractive",
                                             "fv/extractive"], n=1, cutoff=0.6)  # fmt: skip
    raise UnknownTaskError(
        f"Unknown suite {name!r}. Use one of {', '.join(available_suites())}, "
        "fv/abstractive, fv/extractive, a folder of {task}.json files, or one task .json file."
        + (f" Did you mean {close[0]!r}?" if close else "")
    )


def check_suite_name(name: str) -> None:
    """Refuse a suite name that cannot load (unknown name, missing folder or file) without
    reading any task file: the cheap check made before a model is loaded."""
    _suite_path(str(name))


def get_suite(name: str, **kwargs: Any) -> TaskSuite:
    """A suite by registered name (``latent``, ``bitwise``, ``lists``, ``words``), a folder
    of ``{task}.json`` files, or one task ``.json`` file (a suite of that one task);
    ``fv/abstractive`` and ``fv/extractive`` are the function-vector
    paper's files shipped with tvlens (:data:`FV_DATA_DIR`). ``kwargs`` go to the suite's
    generator (e.g. ``seed=1``); for a folder or file, ``split=`` picks one of its files' named
    splits (see :meth:`~tvlens.tasks.core.Task.from_json`).
    ``get_suite(**suite.spec)`` rebuilds a suite from its spec.
    """
    name = str(name)
    path = _suite_path(name)
    if path is None:
        try:
            return _SUITES[name](**kwargs)
        except TypeError as e:
            raise TypeError(f"Bad arguments for suite {name!r}: {e}") from None
    if path.is_dir():
        return TaskSuite.load(path, split=kwargs.get("split"))
    split = kwargs.get("split")
    task = Task.from_json(path, split=split)
    return TaskSuite(
        name=task.name,
        tasks=(task,),
        description=f"the task file {path.name}",
        spec={"name": name, **({"split": split} if split is not None else {})},
    )
