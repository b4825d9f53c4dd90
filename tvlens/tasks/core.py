"""Tasks and task suites.

A :class:`Task` is a named, ordered set of (input, output) pairs. The on-disk format is the
common ICL JSON format: a list of ``{"input": ..., "output": ...}`` objects, one file per task.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tvlens.errors import EmptyTaskError, TaskFormatError, UnknownTaskError


@dataclass(frozen=True)
class Example:
    """One (input, output) pair of a task."""

    input: str
    output: str


@dataclass(frozen=True)
class Task:
    """A named set of (input, output) pairs.

    Attributes:
        name: Unique name within its suite (e.g. ``"latent_0"``, ``"antonyms"``).
        examples: The pairs, in a fixed order.
        family: Which generator produced it (``"latent"``, ``"bitwise"``, ``"list"``,
            ``"null"``, ``"word"`` or ``"custom"``).
        random_outputs: The Null task: every time a prompt is built, each output is drawn at
            random from the task's outputs, so the demonstrations carry no consistent task.
        description: Free text.
    """

    name: str
    examples: tuple[Example, ...]
    family: str = "custom"
    random_outputs: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("A task needs a non-empty name.")
        object.__setattr__(self, "examples", tuple(self.examples))
        if not self.examples:
            raise EmptyTaskError(
                f"Task {self.name!r} has no examples. Give it at least k+1 (input, output) "
                "pairs (k demonstrations and a query)."
            )
        for ex in self.examples:
            if not isinstance(ex, Example):
                raise TypeError(f"Task {self.name!r}: examples must be Example, got {type(ex)}")
            if not str(ex.input).strip() or not str(ex.output).strip():
                raise EmptyTaskError(
                    f"Task {self.name!r} has an example with an empty input or output: {ex!r}."
                )

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    @property
    def inputs(self) -> list[str]:
        return [ex.input for ex in self.examples]

    @property
    def outputs(self) -> list[str]:
        return [ex.output for ex in self.examples]

    @classmethod
    def from_pairs(cls, name: str, pairs: Sequence[tuple[str, str]], **kwargs) -> Task:
        return cls(name=name, examples=tuple(Example(str(i), str(o)) for i, o in pairs), **kwargs)

    def words(self) -> set[str]:
        """Every whitespace-separated word in inputs and outputs (for word-level vocabularies)."""
        out: set[str] = set()
        for ex in self.examples:
            out.update(ex.input.split())
            out.update(ex.output.split())
        return out

    # ------------------------------------------------------------------ splits
    def split(
        self, fractions: Sequence[float] = (0.5, 0.25, 0.25), seed: int = 0
    ) -> tuple[Task, ...]:
        """Split into disjoint parts (e.g. train / dev / test), shuffled with ``seed``.

        Each part keeps the task's name and flags; a part that would be empty raises
        :class:`EmptyTaskError`.
        """
        if abs(sum(fractions) - 1.0) > 1e-6 or any(f <= 0 for f in fractions):
            raise ValueError(f"fractions must be positive and sum to 1, got {fractions}")
        order = np.random.default_rng(seed).permutation(len(self.examples))
        bounds = np.round(np.cumsum([0.0, *fractions]) * len(order)).astype(int)
        parts = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if hi <= lo:
                raise EmptyTaskError(
                    f"Task {self.name!r} has {len(self)} examples: too few to split into "
                    f"{fractions}. Use fewer parts or a task with more examples."
                )
            parts.append(replace(self, examples=tuple(self.examples[i] for i in order[lo:hi])))
        return tuple(parts)

    # ------------------------------------------------------------------ JSON
    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"input": ex.input, "output": ex.output} for ex in self.examples]
        path.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | Path, name: str | None = None, **kwargs) -> Task:
        """Load ``[{"input": ..., "output": ...}, ...]``; the name defaults to the file stem."""
        path = Path(path)
        if not path.is_file():
            raise UnknownTaskError(f"Task file {str(path)!r} does not exist.")
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TaskFormatError(f"Task file {str(path)!r} is not valid JSON: {e}") from None
        if not isinstance(rows, list) or not all(
            isinstance(r, dict) and "input" in r and "output" in r for r in rows
        ):
            raise TaskFormatError(
                f"Task file {str(path)!r} must be a JSON list of "
                '{"input": ..., "output": ...} objects.'
            )
        pairs = [(str(r["input"]), str(r["output"])) for r in rows]
        return cls.from_pairs(name or path.stem, pairs, **kwargs)


@dataclass(frozen=True)
class TaskSuite:
    """An ordered set of uniquely named tasks."""

    name: str
    tasks: tuple[Task, ...]
    description: str = ""
    # How the suite was made, so it can be rebuilt by name (``get_suite(**spec)``).
    spec: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise EmptyTaskError(f"Suite {self.name!r} has no tasks.")
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"Suite {self.name!r} has duplicate task names: {dupes}")

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __getitem__(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise UnknownTaskError(
            f"No task {name!r} in suite {self.name!r}. Available: {', '.join(self.names)}."
        )

    def select(self, names: Sequence[str]) -> TaskSuite:
        """A sub-suite with the given task names, in that order."""
        return replace(self, tasks=tuple(self[n] for n in names))

    def with_task(self, task: Task) -> TaskSuite:
        return replace(self, tasks=(*self.tasks, task))

    def words(self) -> set[str]:
        out: set[str] = set()
        for t in self.tasks:
            out |= t.words()
        return out

    def save(self, directory: str | Path) -> Path:
        """One ``{task}.json`` per task in ``directory``."""
        directory = Path(directory)
        for t in self.tasks:
            t.to_json(directory / f"{t.name}.json")
        return directory

    @classmethod
    def load(cls, directory: str | Path, name: str | None = None) -> TaskSuite:
        """Load every ``*.json`` in ``directory`` as a task (sorted by file name).

        A folder with no task files of its own but sub-folders of them (the function-vector
        datasets' ``abstractive/`` and ``extractive/``) loads them all, each task's ``family``
        being its sub-folder; a name found in two sub-folders becomes ``sub/name``.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise UnknownTaskError(f"Suite folder {str(directory)!r} does not exist.")
        files = sorted(directory.glob("*.json"))
        tasks: list[Task]
        if files:
            tasks = [Task.from_json(f) for f in files]
        else:
            nested = sorted(
                f for sub in sorted(directory.iterdir()) if sub.is_dir() for f in sub.glob("*.json")
            )
            if not nested:
                raise EmptyTaskError(
                    f"Suite folder {str(directory)!r} holds no *.json task files (nor do its "
                    "sub-folders)."
                )
            stems = [f.stem for f in nested]
            tasks = [
                Task.from_json(
                    f,
                    name=f.stem if stems.count(f.stem) == 1 else f"{f.parent.name}/{f.stem}",
                    family=f.parent.name,
                )
                for f in nested
            ]
        return cls(
            name=name or directory.name,
            tasks=tuple(tasks),
            spec={"name": str(directory)},
        )
