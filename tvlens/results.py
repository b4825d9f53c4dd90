"""Save, load and plot for every result object (:class:`Result`).

``save(path)`` writes one JSON file: the result's ``to_dict()`` (what readers of tvlens's
JSON outputs know) plus, under ``"tvlens_result"``, its type and full state (tensors, arrays,
nested results), so that ``Type.load(path)`` gives back an equal object.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tvlens.errors import TVLensError
from tvlens.runs import claim_file
from tvlens.runs.portable import local, portable

KEY = "tvlens_result"


def encode(x: Any) -> Any:
    """A JSON-ready form of ``x`` that :func:`decode` turns back into an equal object."""
    import numpy as np  # here, not at the top: plotting imports this module, the CLI plotting
    import torch

    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        cls = type(x)
        if not cls.__module__.startswith("tvlens."):
            raise TVLensError(f"Cannot save a {cls.__name__}: not a tvlens result.")
        return {
            "__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
            "fields": {f.name: encode(getattr(x, f.name)) for f in dataclasses.fields(x)},
        }
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        return {"__tensor__": t.float().tolist() if t.dtype == torch.bfloat16 else t.tolist(),
                "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}  # fmt: skip
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tolist(), "dtype": str(x.dtype), "shape": list(x.shape)}
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, tuple):
        return {"__tuple__": [encode(v) for v in x]}
    if isinstance(x, Path):
        return {"__path__": str(x)}
    if isinstance(x, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in x):
            return {k: encode(v) for k, v in x.items()}
        return {"__items__": [[encode(k), encode(v)] for k, v in x.items()]}
    if isinstance(x, list):
        return [encode(v) for v in x]
    if x is None or isinstance(x, bool | int | float | str):
        return x
    raise TVLensError(f"Cannot save a {type(x).__name__} inside a result.")


# Modules that moved: results saved before still load (issue 30: the comparison left atv/).
MOVED_MODULES = {
    "tvlens.icl_accuracy": "tvlens.evaluation.icl",
    "tvlens.demo": "tvlens.demo.report",  # demo.py became the demo package (its DemoResult)
    **{f"tvlens.atv.{old}": f"tvlens.compare.{new}" for old, new in (
        ("compare", "run"), ("compare_config", "config"), ("compare_data", "data"),
        ("compare_setup", "setup"), ("workers", "workers"), ("report", "report"),
        ("baselines", "baselines"), ("retrieval", "retrieval"), ("tuned", "tuned"),
        ("fitting", "fitting"), ("registry", "registry"), ("distill", "distill"),
        ("methods", "methods"), ("evaluate", "evaluate"), ("demo_step", "demo_step"),
    )},
}  # fmt: skip
# Types renamed: (module, Name) -> the new one. Pairs, not "module:Name" strings: this table
# describes saved files, it imports nothing (the import test reads "module:Name" strings as
# run-time imports).
RENAMED_TYPES = {
    # one MethodResult (the comparison's); the task-vector report's per-method record
    ("tvlens.injection.evaluate", "MethodResult"): (
        "tvlens.injection.evaluate",
        "VectorMethodResult",
    ),
}


def decode(x: Any) -> Any:
    import numpy as np
    import torch

    if isinstance(x, list):
        return [decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "__dataclass__" in x:
        module, _, name = x["__dataclass__"].partition(":")
        module, name = RENAMED_TYPES.get((module, name), (module, name))
        if not module.startswith("tvlens."):
            raise TVLensError(f"Refusing to load {x['__dataclass__']!r}: not a tvlens type.")
        cls: Any = importlib.import_module(MOVED_MODULES.get(module, module))
        for part in name.split("."):
            cls = getattr(cls, part)
        obj = cls.__new__(cls)  # the saved state as it was, without re-running checks
        for k, v in x["fields"].items():
            object.__setattr__(obj, k, decode(v))
        for f in dataclasses.fields(cls):  # a field added since it was saved: its default
            if f.name not in x["fields"] and f.default_factory is not dataclasses.MISSING:
                object.__setattr__(obj, f.name, f.default_factory())
        if hasattr(cls, "upgrade_loaded"):  # a type whose fields moved: the saved ones follow
            obj.upgrade_loaded()
        return obj
    if "__tensor__" in x:
        dtype = getattr(torch, x["dtype"])
        return torch.tensor(x["__tensor__"], dtype=dtype).reshape(x["shape"])
    if "__ndarray__" in x:
        return np.array(x["__ndarray__"], dtype=x["dtype"]).reshape(x["shape"])
    if "__tuple__" in x:
        return tuple(decode(v) for v in x["__tuple__"])
    if "__path__" in x:
        return Path(x["__path__"])
    if "__items__" in x:
        return {decode(k): decode(v) for k, v in x["__items__"]}
    return {k: decode(v) for k, v in x.items()}


class Result:
    """What every result object has: ``to_dataframe()``, ``plot()``, ``save()``, ``load()``.

    Subclasses (dataclasses) define ``to_dataframe`` and ``plot`` (the library's figure for
    them); ``save`` / ``load`` are shared; ``print(result)`` shows what the CLI prints."""

    def to_dataframe(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def plot(self, **kwargs: Any):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __str__(self) -> str:
        """``print(result)``: a few lines for people, what the ``tvlens`` command prints
        after the run (here: the table; subclasses say more)."""
        return self.to_dataframe().to_string(index=False)

    def save(self, path: str | Path, *, extra: Mapping[str, Any] | None = None,
             **to_dict_options: Any) -> Path:  # fmt: skip
        """``path`` (JSON): ``extra`` (a run's config...), ``to_dict(**to_dict_options)`` plus
        the state :meth:`load` reads back. A file at ``path`` is overwritten only when tvlens
        wrote it (:func:`tvlens.runs.claim_file`)."""
        path = claim_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.saved(extra=extra, **to_dict_options)
        path.write_text(json.dumps(portable(data), indent=1, allow_nan=True) + "\n")
        return path

    def saved(self, *, extra: Mapping[str, Any] | None = None, **to_dict_options: Any) -> dict:
        """The JSON document :meth:`save` writes (before paths are made portable), for a
        writer that writes it its own way (atomically: the comparison's ``comparison.json``)."""
        data = dict(extra or {})
        if hasattr(self, "to_dict"):
            data.update(self.to_dict(**to_dict_options))
        data[KEY] = {"type": f"{type(self).__module__}:{type(self).__qualname__}",
                     "state": encode(self)}  # fmt: skip
        return data

    @classmethod
    def load(cls, path: str | Path):
        """A result written by :meth:`save` (a clear error for any other file)."""
        path = Path(path)
        if path.is_dir():
            found = sorted(p.name for p in path.glob("*.json") if not p.name.startswith("."))
            raise TVLensError(
                f"{str(path)!r} is a folder, not a result file: give the JSON file a run wrote "
                f"in it{' (' + ', '.join(found[:6]) + ')' if found else ''}."
            )
        if not path.is_file():
            raise TVLensError(f"No result file {str(path)!r}.")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TVLensError(f"{str(path)!r} is not a saved result ({e}).") from None
        if not isinstance(data, dict) or KEY not in data:
            raise TVLensError(
                f"{str(path)!r} was not written by a result's save(): it has no "
                f"{KEY!r} entry (files written before tvlens saved results whole cannot be "
                "loaded back: compute the result again)."
            )
        obj = decode(local(data[KEY]["state"]))  # paths were saved portable
        if not isinstance(obj, cls):
            raise TVLensError(
                f"{str(path)!r} holds a {type(obj).__name__}, not a {cls.__name__}: load it "
                f"with {type(obj).__name__}.load."
            )
        return obj


def as_dict(x: Any) -> Any:
    """A result object's ``to_dict()``, or ``x`` itself (plot functions take either)."""
    return x.to_dict() if hasattr(x, "to_dict") and not isinstance(x, dict) else x


@dataclasses.dataclass
class Report(Result, Mapping):
    """A result that is the JSON document its run writes (``res["rows"]``, ``res.keys()``: it
    reads as that mapping), with its table as ``to_dataframe()``. A subclass says where the
    table is (:meth:`rows`) and which figure ``plot()`` draws."""

    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per row of the table."""
        return list(self.data.get("rows", []))

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.rows())

    def plot(self, **kwargs: Any):
        raise TVLensError(
            f"A {type(self).__name__} has no single figure: its run wrote its figures next to "
            "its JSON; to_dataframe() gives the table to plot."
        )
