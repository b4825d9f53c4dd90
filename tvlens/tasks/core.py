"""Tasks and task suites.

A :class:`Task` is a named, ordered set of (input, output) pairs, one JSON file per task, in
any of three shapes:

- a list of ``{"input": ..., "output": ...}`` objects (the common ICL format; what
  :meth:`Task.to_json` writes);
- one object ``{input: output, ...}`` (Hendel et al. 2023's task files);
- named splits ``{"train": [...], "valid": [...], "test": [...]}``, each split in either shape
  above (the processed files of ATV and ELICIT). The task then holds every pair, the splits in
  file order, and keeps the file's own split in :attr:`Task.splits`: ``Task.split()`` returns
  it, ``Task.part("test")`` one split, and ``from_json(..., split="train")`` loads one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tvlens.errors import ConfigError, EmptyTaskError, TaskFormatError, UnknownTaskError
from tvlens.runs import claim_file

_SHAPES = (
    'a JSON list of {"input": ..., "output": ...} objects, one object {input: output, ...}, or '
    'named splits {"train": [...], "valid": [...], "test": [...]}'
)


def _scalar(value: object) -> bool:
    # null would become the word "None"; a list or object is no single answer.
    return not isinstance(value, bool) and isinstance(value, str | int | float)


def _pairs(data: object, where: str) -> list[tuple[str, str]]:
    """The pairs of a list of ``{input, output}`` rows or of an ``{input: output}`` object."""
    if isinstance(data, dict):
        for key, value in data.items():
            if not _scalar(value):
                raise TaskFormatError(
                    f"{where}: the value of {key!r} is {json.dumps(value)[:80]}; in an "
                    "{input: output} object every output must be a string (or number)."
                )
        return [(str(k), str(v)) for k, v in data.items()]
    if not isinstance(data, list) or not all(
        isinstance(r, dict) and "input" in r and "output" in r for r in data
    ):
        raise TaskFormatError(f"{where} must be {_SHAPES}.")
    for i, r in enumerate(data):
        for key in ("input", "output"):
            if not _scalar(r[key]):
                raise TaskFormatError(
                    f"{where}, row {i}: {key} is {json.dumps(r[key])}; "
                    "inputs and outputs must be strings (or numbers)."
                )
    return [(str(r["input"]), str(r["output"])) for r in data]


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads``'s ``object_pairs_hook``: JSON lets a key repeat and keeps the last value,
    which in an ``{input: output}`` object silently loses a pair."""
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _is_splits(data: object) -> bool:
    """Named splits: an object whose every value is a list or object (not an answer)."""
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, list | dict) for v in data.values())
    )


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
        splits: The file's own named splits (``{"train": (...), "valid": (...), "test":
            (...)}``) when it was loaded from a file that has them, else empty.
    """

    name: str
    examples: tuple[Example, ...]
    family: str = "custom"
    random_outputs: bool = False
    description: str = ""
    splits: dict[str, tuple[Example, ...]] = field(default_factory=dict, compare=False, repr=False)

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
    def part(self, split: str) -> Task:
        """One of the file's own splits (``"train"``, ``"valid"``, ``"test"``...) as a task."""
        if split not in self.splits:
            raise ConfigError(
                f"Task {self.name!r} has no split {split!r}: "
                + (
                    f"its file has {', '.join(self.splits)}."
                    if self.splits
                    else "its file has no named splits (use task.split(fractions))."
                )
            )
        return replace(self, examples=self.splits[split], splits={})

    def split(self, fractions: Sequence[float] | None = None, seed: int = 0) -> tuple[Task, ...]:
        """Split into disjoint parts (e.g. train / dev / test), shuffled with ``seed``.

        Without ``fractions``: the file's own splits when it has them (in file order, see
        :attr:`splits`), else ``(0.5, 0.25, 0.25)``. Each part keeps the task's name and
        flags; a part that would be empty raises :class:`EmptyTaskError`.
        """
        if fractions is None:
            if self.splits:
                return tuple(self.part(name) for name in self.splits)
            fractions = (0.5, 0.25, 0.25)
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
            part = tuple(self.examples[i] for i in order[lo:hi])
            parts.append(replace(self, examples=part, splits={}))
        return tuple(parts)

    # ------------------------------------------------------------------ JSON
    def to_json(self, path: str | Path) -> Path:
        """The task as a list of ``{"input", "output"}`` rows; an existing file is replaced
        only when tvlens wrote it (:func:`tvlens.runs.claim_file`)."""
        path = claim_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"input": ex.input, "output": ex.output} for ex in self.examples]
        path.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(
        cls,
        path: str | Path,
        name: str | None = None,
        split: str | Sequence[str] | None = None,
        **kwargs,
    ) -> Task:
        """Load a task file in any of the three shapes (see the module docstring); the name
        defaults to the file stem.

        ``split`` (for a file of named splits): only that split's pairs (or those of several,
        in the order given). By default the task holds every split's pairs, in file order, and
        :attr:`splits` keeps them apart.
        """
        path = Path(path)
        if path.is_dir():
            raise TaskFormatError(
                f"{str(path)!r} is a folder, not a task file: a folder of task files is a suite "
                "(get_suite(folder), --suite FOLDER); give one .json file here."
            )
        if not path.is_file():
            raise UnknownTaskError(f"Task file {str(path)!r} does not exist.")
        try:
            data = json.loads(
                path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys
            )
        except _DuplicateKey as e:
            raise TaskFormatError(
                f"Task file {str(path)!r} has the key {e.args[0]!r} twice in one object (JSON "
                "keeps only the last, so a pair would be lost): give each input once, or write "
                'the task as a list of {"input": ..., "output": ...} rows, which may repeat an '
                "input."
            ) from None
        except json.JSONDecodeError as e:
            raise TaskFormatError(f"Task file {str(path)!r} is not valid JSON: {e}") from None
        except UnicodeDecodeError as e:
            raise TaskFormatError(
                f"Task file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start}): "
                "save it as UTF-8 JSON."
            ) from None
        where = f"Task file {str(path)!r}"
        splits: dict[str, tuple[Example, ...]] = {}
        if _is_splits(data):
            for key, rows in data.items():
                pairs_k = _pairs(rows, f"{where}, split {key!r}")
                if not pairs_k:
                    raise EmptyTaskError(
                        f"{where}: split {key!r} is empty; give it pairs, or remove it from the "
                        "file (a split with no pairs cannot be sampled or scored)."
                    )
                splits[str(key)] = tuple(Example(i, o) for i, o in pairs_k)
            wanted = (
                list(splits)
                if split is None
                else [split]
                if isinstance(split, str)
                else list(split)
            )
            unknown = [w for w in wanted if w not in splits]
            if unknown:
                raise ConfigError(
                    f"split={split!r}: {where} has no split {unknown[0]!r}; it has "
                    f"{', '.join(splits)}."
                )
            examples = tuple(ex for w in wanted for ex in splits[w])
            if split is not None:
                splits = {}
        else:
            if split is not None:
                raise ConfigError(
                    f"split={split!r}: {where} has no named splits (it is one set of pairs): "
                    "leave out split=, or split it with task.split(fractions)."
                )
            examples = tuple(Example(i, o) for i, o in _pairs(data, where))
        return cls(name=name or path.stem, examples=examples, splits=splits, **kwargs)


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
    def load(
        cls,
        directory: str | Path,
        name: str | None = None,
        split: str | Sequence[str] | None = None,
    ) -> TaskSuite:
        """Load every ``*.json`` in ``directory`` as a task (sorted by file name), in any of
        the three shapes of :meth:`Task.from_json` (``split`` is passed on to it).

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
            tasks = [Task.from_json(f, split=split) for f in files]
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
                    split=split,
                    family=f.parent.name,
                )
                for f in nested
            ]
        return cls(
            name=name or directory.name,
            tasks=tuple(tasks),
            spec={"name": str(directory), **({"split": split} if split is not None else {})},
        )
