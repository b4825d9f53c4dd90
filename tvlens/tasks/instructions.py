"""Natural-language instructions for tasks: several training templates and one held-out
template per task, and a category (the instructed prompts of Kang et al. 2025's tasks; see
``tvlens/tasks/data/instructions/``).

An instruction is one line that opens the prompt (:attr:`PromptTemplate.instruction`); the
rest of the prompt keeps its layout (``Q: {x}`` / ``A:``), so an instructed and a bare prompt
differ by the instruction line alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvlens.errors import TVLensError
from tvlens.tasks.prompts import PromptTemplate, get_template

INSTRUCTIONS_DIR = Path(__file__).parent / "data" / "instructions"


@dataclass(frozen=True)
class TaskInstructions:
    """A task's instructions: ``train`` (sampled per training query) and ``heldout`` (used
    only at test, to measure what carries over to wording never trained on)."""

    task: str
    category: str
    train: tuple[str, ...]
    heldout: str

    def templates(self, base: str | PromptTemplate = "qa") -> list[PromptTemplate]:
        """The training templates: ``base``'s layout opened by each training instruction."""
        b = get_template(base)
        return [
            b.with_instruction(t, f"{b.name}+{self.task}#{i}") for i, t in enumerate(self.train)
        ]

    def heldout_template(self, base: str | PromptTemplate = "qa") -> PromptTemplate:
        b = get_template(base)
        return b.with_instruction(self.heldout, f"{b.name}+{self.task}#heldout")


def _parse(task: str, entry: Any, where: str) -> TaskInstructions:
    if not isinstance(entry, dict) or not {"category", "train", "heldout"} <= set(entry):
        raise TVLensError(
            f"Instructions of task {task!r} in {where} need 'category', 'train' (a list) and "
            "'heldout'."
        )
    train = entry["train"]
    if not isinstance(train, list) or len(train) < 1:
        raise TVLensError(f"Instructions of task {task!r} in {where}: 'train' is an empty list.")
    lines = [*train, entry["heldout"]]
    if not all(isinstance(t, str) and t.strip() and "\n" not in t for t in lines):
        raise TVLensError(
            f"Instructions of task {task!r} in {where} must be non-empty one-line strings."
        )
    if len(set(lines)) != len(lines):
        raise TVLensError(
            f"Instructions of task {task!r} in {where} repeat a line: the held-out one must be "
            "new wording."
        )
    return TaskInstructions(task, str(entry["category"]), tuple(train), entry["heldout"])


def load_instructions(source: str | Path | dict) -> dict[str, TaskInstructions]:
    """Instructions by task: a file shipped with tvlens by name (``"fv"``: the 17
    function-vector tasks of the ATV comparison), a JSON file, or a dict ``{"tasks": {task:
    {"category", "train": [...], "heldout"}}}`` (the file's layout)."""
    where = "the given dict"
    if not isinstance(source, dict):
        path = Path(source)
        if not path.suffix and (INSTRUCTIONS_DIR / f"{source}.json").is_file():
            path = INSTRUCTIONS_DIR / f"{source}.json"
        if not path.is_file():
            shipped = sorted(p.stem for p in INSTRUCTIONS_DIR.glob("*.json"))
            raise TVLensError(
                f"No instructions {str(source)!r}: use one shipped with tvlens ({shipped}) or a "
                "JSON file of {'tasks': {task: {category, train, heldout}}}."
            )
        where = str(path)
        try:
            source = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise TVLensError(f"{where} is not valid JSON: {e}.") from None
    tasks = source.get("tasks") if isinstance(source, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise TVLensError(f"{where} holds no 'tasks' object of instructions.")
    return {t: _parse(t, e, where) for t, e in tasks.items()}
