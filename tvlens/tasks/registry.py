"""Suites by name, so that the CLI and saved runs can rebuild them from a small spec."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tvlens.errors import UnknownTaskError
from tvlens.tasks.core import TaskSuite
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


def get_suite(name: str, **kwargs: Any) -> TaskSuite:
    """A suite by registered name (``latent``, ``bitwise``, ``lists``, ``words``), or a folder
    of ``{task}.json`` files; ``fv/abstractive`` and ``fv/extractive`` are the function-vector
    paper's files shipped with tvlens (:data:`FV_DATA_DIR`). ``kwargs`` go to the suite's
    generator (e.g. ``seed=1``); for a folder, ``split=`` picks one of its files' named splits
    (see :meth:`~tvlens.tasks.core.Task.from_json`).
    ``get_suite(**suite.spec)`` rebuilds a suite from its spec.
    """
    if name in _SUITES:
        try:
            return _SUITES[name](**kwargs)
        except TypeError as e:
            raise TypeError(f"Bad arguments for suite {name!r}: {e}") from None
    if name.startswith("fv/") and (FV_DATA_DIR / name[3:]).is_dir():
        return TaskSuite.load(FV_DATA_DIR / name[3:], split=kwargs.get("split"))
    if Path(name).is_dir():
        return TaskSuite.load(name, split=kwargs.get("split"))
    raise UnknownTaskError(
        f"Unknown suite {name!r}. Use one of {', '.join(available_suites())}, "
        "fv/abstractive, fv/extractive, or a folder of {task}.json files."
    )
