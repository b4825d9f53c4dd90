"""Commands built from the function they run and its configuration: :func:`add_command`.

A config field (:class:`tvlens.runs.config.Config`) becomes an option whose type, default,
choices and help are the field's, so none is written twice; with
``overrides=True`` (preset-based runs) every option defaults to None ("the preset's") and
the function gets only the options given. The other parameters, the inputs (model, suite,
output folder, device...), are :class:`Input` s, shared in :data:`INPUTS`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import operator
import re
import sys
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import MISSING, Field, dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import typer

import tvlens.runs as R
from tvlens.cli.errors import one_line_errors
from tvlens.runs.config import choices as field_choices

REQUIRED: Any = ...  # no default: the input must be given
KEYWORD = inspect.Parameter.KEYWORD_ONLY


@dataclass(frozen=True)
class Input:
    """A command parameter that is not a config field: what to run on, where to write."""

    type: Any
    help: str
    default: Any = REQUIRED
    flag: str | None = None  # the option's name when not --{name}
    argument: bool = False
    parser: Callable[[str], Any] | None = None
    metavar: str | None = None  # the value's placeholder in the help, when not its type's

    def parameter(self, name: str, default: Any = REQUIRED) -> inspect.Parameter:
        default = self.default if default is REQUIRED else default
        default = inspect.Parameter.empty if default is REQUIRED else default
        kw = {"help": self.help, **({"parser": self.parser} if self.parser else {})}
        if self.metavar:
            kw["metavar"] = self.metavar
        item, _ = _base(self.type)
        if get_origin(item) is list and not self.argument:  # not <list[str]>: the item's type
            kw["metavar"] = f"<{getattr(get_args(item)[0], '__name__', 'value').lower()}>"
        flags = [self.flag] if self.flag else []
        make = typer.Argument(**kw) if self.argument else typer.Option(*flags, **kw)
        return inspect.Parameter(name, KEYWORD, default=default,
                                 annotation=Annotated[self.type, make])  # fmt: skip


# The inputs several commands share (the rest are the configs' fields).
INPUTS = {
    "model": Input(str, "Short name, HF name, folder, GGUF or tvlens run."),
    "suite": Input(
        str | None,
        "Suite name, folder or task .json file (default: the model's training suite).",
        None,
    ),
    "suites": Input(
        list[str] | None, "Suite name, folder or task .json file (repeat).", None, "--suite"
    ),
    "tasks": Input(list[str] | None, "Only these tasks of each suite (repeat).", None, "--task"),
    "n_examples": Input(int | None, "At most this many (input, output) pairs per task.", None),
    "revision": Input(str | None, "Revision / checkpoint (step750).", None),
    "out": Input(Path, "Output folder."),
    "resume": Input(bool, "Continue the run in --out.", False),
    "device": Input(str | None, "cuda, mps or cpu (default: the best).", None),
}
# Every command's: torch's CPU threads (tvlens.runtime), applied before the command runs.
THREADS = Input(str | None, "CPU threads for torch: a number, 'auto' (the cores other "
                "processes leave free, re-read while training) or 'torch' (one per core). "
                "Default: $TVLENS_THREADS, else auto (docs/results/benchmarks.md).",
                None)  # fmt: skip


# What each command's output inputs hold (input: run kind), by the function the command runs:
# checked before the command's module (torch, TransformerLens) is imported (tvlens.runs).
WRITES: dict[str, dict[str, str]] = {
    "tvlens.demo.run:run_demo": {"figures_dir": R.DEMO, "run_dir": R.TRAIN_SYNTHETIC},
    "tvlens.training.runner:train_synthetic": {"out": R.TRAIN_SYNTHETIC},
    "tvlens.training.regression:train_regression": {"out": R.TRAIN_REGRESSION},
    "tvlens.evaluation.runner:run_eval": {"out": R.EVAL},
    "tvlens.injection.runner:run_task_vectors": {"out": R.VECTORS},
    "tvlens.probing.runner:run_probe": {"out": R.PROBE},
    "tvlens.probing.run:run_emergence": {"out": R.EMERGENCE},
    "tvlens.patching.runner:run_patching": {"out": R.PATCH},
    "tvlens.atv.train:train_atv": {"out": R.ATV_RUN},
    "tvlens.compare.run:run_compare": {"out": R.COMPARE},
    "tvlens.experiments.pretrained:vector_table": {"out": R.PRETRAINED_VECTORS},
    "tvlens.experiments.pretrained:combine_vector_tables": {"out": R.PRETRAINED_VECTORS},
    "tvlens.experiments.pretrained:task_decodability_table": {"out": R.PRETRAINED_DECODABILITY},
    "tvlens.experiments.pretrained:head_comparison": {"out": R.PRETRAINED_HEADS},
    "tvlens.experiments.pretrained:layer_finetuning": {"out": R.FINETUNE},
}


_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data):`~?([^`]+)`")


def plain_help(text: str | None) -> str | None:
    """A docstring as terminal help: reST roles and double backquotes (``tvlens vectors``,
    :func:`tvlens.x.f`) become plain `tvlens vectors` and `tvlens.x.f`."""
    if text is None:
        return None
    return _ROLE.sub(r"`\1`", text).replace("``", "`")


def choice(
    values: Collection[Any] | Callable[[], Collection[Any]], what: str
) -> Callable[[str], Any]:
    """A typer ``parser`` that accepts only ``values`` (named ``what`` in the error); a
    callable (a registry's choices) is read when the option is parsed, so that a method
    registered after the CLI was built is accepted."""

    def parse(value: str) -> Any:
        by_text = {str(v): v for v in (values() if callable(values) else values)}
        if value not in by_text:
            raise typer.BadParameter(
                f"Unknown {what} {value!r}: {what} must be one of {', '.join(by_text)}."
            )
        return by_text[value]

    return parse


def json_value(flag: str, or_text: bool = False) -> Callable[[str], Any]:
    """JSON; ``or_text``: a value that is not a JSON object or list is the text itself (a
    name, for fields that take a name or a spec)."""

    def parse(value: str) -> Any:
        if or_text and not value.lstrip().startswith(("{", "[")):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:  # at parse time: click's one-line form
            raise typer.BadParameter(f"{flag} is not valid JSON ({e}).") from None

    return parse


def _base(hint: Any) -> tuple[Any, bool]:
    """``hint`` without ``| None``, and whether None was allowed."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        optional = len(args) < len(get_args(hint))
        return (args[0] if len(args) == 1 else functools.reduce(operator.or_, args)), optional
    return hint, False


_WORDS = {int: "integers", float: "numbers", str: "names"}


def _split(flag: str, cast: Any, item: Callable[[str], Any] = str) -> Callable[[str], list]:
    """Names (each checked by ``item``): blanks around and between commas are dropped;
    numbers: every item must parse."""

    def parse(value: str) -> list:
        if cast is str:
            return [item(x.strip()) for x in value.split(",") if x.strip()]
        try:
            return [cast(x) for x in value.split(",")]
        except ValueError:  # at parse time: click's one-line form
            says = f"{flag} must be comma-separated {_WORDS.get(cast, 'values')}, got {value!r}."
            raise typer.BadParameter(says) from None

    return parse


def comma_separated(flag: str, cast: Any = str) -> Callable[[str], list]:
    """A typer ``parser`` for an own input written ``a,b,c`` (numbers: each must parse; a
    bad one is click's one-line error)."""
    return _split(flag, cast)


def _option(config: type, f: Field, hint: Any, overrides: bool) -> tuple[Any, Any, bool]:
    """(annotation, default, repeatable) of the typer parameter for field ``f``."""
    help_ = f.metadata.get("help")
    if not help_:
        raise TypeError(f"{config.__name__}.{f.name} has no help (use tvlens.runs.config.opt).")
    flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
    default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    base, optional = _base(hint)
    values = field_choices(config, f.name)
    kw: dict[str, Any] = {"help": plain_help(help_)}
    repeat = False
    if values is not None and "sep" in f.metadata:  # "a,b" of the allowed values
        live = (lambda: field_choices(config, f.name)) if "choices" in f.metadata else values
        ann, kw["parser"] = str, _split(flag, str, choice(live, flag.lstrip("-")))
        kw["metavar"] = "[" + "|".join(map(str, values)) + "],..."
        default = None if default is None else ",".join(map(str, default))
    elif values is not None:
        ann: Any = str
        metavar = "[" + "|".join(map(str, values)) + "]"
        kw.update(parser=choice(values, flag.lstrip("-")), metavar=metavar)
    elif "sep" in f.metadata:  # a list written "a,b,c"
        cast = (get_args(base) or (str,))[0]
        ann, kw["parser"], kw["metavar"] = str, _split(flag, cast), f"<{cast.__name__}>,..."
        default = None if default is None else ",".join(map(str, default))
    elif base in (int, float, str, bool):
        ann = base
    elif get_origin(base) is tuple and get_args(base)[-1] is Ellipsis:  # repeat the option
        ann, repeat = list[get_args(base)[0]], True
        default, optional = (None if default is None else list(default)), True
        kw["metavar"] = f"<{get_args(base)[0].__name__}>"
    elif get_origin(base) is tuple:
        ann = base
    else:  # dicts, unions of records...: JSON
        or_text = str in get_args(base) or bool(f.metadata.get("spec"))
        ann, kw["parser"] = str, json_value(flag, or_text)
        kw["metavar"] = "<name|json>" if or_text else "<json>"
        default = None if default is None else json.dumps(default)
    if overrides:
        default, optional = None, True
        kw["help"] = re.sub(r" ?\(default: [^)]*\)", "", kw["help"]) + " (default: the preset's)"
        if ann is bool and "/" not in flag:
            flag = f"{flag}/--no-{flag.removeprefix('--')}"
    if optional:
        ann = ann | None
    names = [flag, *([f.metadata["alias"]] if "alias" in f.metadata else [])]
    return Annotated[ann, typer.Option(*names, **kw)], default, repeat


def add_command(
    app: typer.Typer,
    name: str,
    runner: str | Callable[..., Any],
    config: type | None = None,
    *,
    help: str | None = None,
    inputs: str = "",
    out: str | None = None,
    presets: tuple[Collection[str] | None, str] | None = None,
    own: dict[str, Input] | None = None,
    defaults: dict[str, Any] | None = None,
    only: Collection[str] | None = None,
    skip: Collection[str] = (),
    overrides: bool = False,
    wrote: str | None = None,
    writes: dict[str, str] | None = None,
) -> None:
    """Register ``tvlens ... name``, which calls ``runner`` (a function, or ``"module:name"``,
    imported when the command runs so that ``tvlens --help`` stays fast) with: the ``inputs``
    (names in :data:`INPUTS` or in ``own``; ``defaults`` replaces theirs), ``out`` (a folder
    for what ``out`` says), ``preset`` (``presets``: its names, or None for "listed when
    unknown", and its default) and ``config`` made from options, one per field (``only``
    these, less ``skip``; ``overrides``: each defaults to the preset's and the runner gets the
    fields given as keyword arguments). ``help`` defaults to the config's docstring. The
    command prints the result (and ``wrote``: a file under ``out``). ``writes``: the run kind
    of each output input (``{"out": "vectors"}``), checked before anything is imported."""
    table = {**INPUTS, **(own or {})}
    names = inputs.split() + [k for k in own or {} if k not in inputs.split()]
    if out is not None:
        table["out"] = replace(INPUTS["out"], help=f"Folder for {out}.")
        names.insert(0, "out")
    if presets is not None:
        said = ": " + ", ".join(presets[0]) if presets[0] else " (an unknown name lists them)"
        table["preset"], names = Input(str, f"Preset{said}.", presets[1]), [*names, "preset"]
    params = [table[n].parameter(n, (defaults or {}).get(n, REQUIRED)) for n in names]
    chosen = [f for f in fields(config) if (only is None or f.name in only)
              and f.name not in skip] if config else []  # fmt: skip
    hints = typing.get_type_hints(config) if config else {}
    made = {f.name: _option(config, f, hints[f.name], overrides) for f in chosen}
    if clash := set(names) & set(made):
        raise TypeError(f"tvlens {name}: {sorted(clash)} are inputs and config fields.")
    params += [inspect.Parameter(n, KEYWORD, default=default, annotation=ann)
               for n, (ann, default, _) in made.items()]  # fmt: skip
    params.append(THREADS.parameter("threads"))

    def command(**kwargs: Any) -> None:
        threads = kwargs.pop("threads")
        values = {n: kwargs.pop(n) for n in made}
        for n in (n for n, (_, _, repeat) in made.items() if repeat):  # none given: the default
            values[n] = tuple(values[n] or ()) or None
        if overrides:
            kwargs.update({k: v for k, v in values.items() if v is not None})
        elif config is not None:
            kwargs["config"] = config(**values)
        fn = runner
        if isinstance(fn, str):
            module, function = fn.split(":")
            fn = getattr(importlib.import_module(module), function)
        if threads is not None or "torch" in sys.modules:  # a command that runs torch
            from tvlens.runtime import configure_threads

            configure_threads(threads)
        typer.echo(fn(**kwargs))
        if wrote is not None:
            typer.echo(f"wrote {Path(kwargs['out']) / wrote.format(**kwargs)}")

    command.__name__, command.__doc__ = name.replace("-", "_"), plain_help(help or config.__doc__)
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.runner, command.inputs = runner, names  # type: ignore[attr-defined]  # for tests
    command.config, command.overrides = config, overrides  # type: ignore[attr-defined]  # tests
    writes = writes if writes is not None else WRITES.get(runner if isinstance(runner, str) else "")
    app.command(name)(one_line_errors(command, writes))
