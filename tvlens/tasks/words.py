"""A small hand-written word-level suite for pretrained models.

The tasks live as JSON files in ``tvlens/tasks/data/`` (the common
``[{"input": ..., "output": ...}]`` format).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tvlens.errors import UnknownTaskError
from tvlens.tasks.core import Task, TaskSuite

DATA_DIR = Path(__file__).parent / "data"


def word_task_names() -> list[str]:
    return sorted(p.stem for p in DATA_DIR.glob("*.json"))


def word_suite(tasks: Iterable[str] | None = None) -> TaskSuite:
    """The built-in word-level tasks (antonyms, country→capital, singular→plural, ...)."""
    available = word_task_names()
    names = list(tasks) if tasks is not None else available
    missing = [n for n in names if n not in available]
    if missing:
        raise UnknownTaskError(
            f"No word-level task(s) {missing}. Available: {', '.join(available)}."
        )
    return TaskSuite(
        "words",
        tuple(Task.from_json(DATA_DIR / f"{n}.json", family="word") for n in names),
        description="hand-written word-level tasks for pretrained models",
        spec={"name": "words", "tasks": names},
    )
