"""CLI options built from a configuration dataclass's fields (:class:`tvlens.runs.config.Config`):
the option's type, default, choices and help are the field's, so none is written twice.

``@config_options(VectorsConfig)`` on a command whose last parameter is ``config`` adds one
option per field (``--n-extract``...) and passes the command a ``VectorsConfig`` made from
them; ``overrides=True`` is for preset-based runs: every option defaults to None ("the
preset's") and the command gets a dict of the options that were given.
"""

from __future__ import annotations

import functools
import inspect
import json
import operator
import re
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import typer

from tvlens.cli.errors import json_option, number_list
from tvlens.errors import ConfigError
from tvlens.runs.config import choices as field_choices

# Options that several commands share (the rest come from the configs).
ModelOpt = Annotated[str, typer.Option(help="Short name, HF name, folder, GGUF or tvlens run.")]
SuiteOpt = Annotated[
    str | None, typer.Option(help="Suite name or folder (default: the model's training suite).")
]
RevisionOpt = Annotated[str | None, typer.Option(help="Revision / checkpoint (step750).")]
DeviceOpt = Annotated[str | None, typer.Option(help="cuda, mps or cpu (default: the best).")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue the run in --out.")]


def out_opt(what: str) -> Any:
    """``--out``: a folder for ``what``."""
    return Annotated[Path, typer.Option(help=f"Folder for {what}.")]


def preset_opt(presets: Collection[str]) -> Any:
    return Annotated[str, typer.Option(help="Preset: " + ", ".join(presets) + ".")]


def choice(values: Collection[Any], what: str) -> Callable[[str], Any]:
    """A typer ``parser`` that accepts only ``values`` (named ``what`` in the error)."""
    by_text = {str(v): v for v in values}

    def parse(value: str) -> Any:
        if value not in by_text:
            raise typer.BadParameter(
                f"Unknown {what} {value!r}: {what} must be one of {', '.join(by_text)}."
            )
        return by_text[value]

    return parse


def _json(flag: str, or_text: bool) -> Callable[[str], Any]:
    """JSON; ``or_text``: a value that is not a JSON object or list is the text itself (a
    name, for fields that take a name or a spec)."""

    def parse(value: str) -> Any:
        if or_text and not value.lstrip().startswith(("{", "[")):
            return value
        try:
            return json_option(value, flag)
        except ConfigError as e:  # at parse time: click's one-line form
            raise typer.BadParameter(str(e)) from None

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
            return number_list(value, flag, cast, f"comma-separated {_WORDS.get(cast, 'values')}")
        except ConfigError as e:  # at parse time: click's one-line form
            raise typer.BadParameter(str(e)) from None

    return parse


def _option(config: type, f: Field, hint: Any, overrides: bool) -> tuple[Any, Any, bool]:
    """(annotation, default, repeatable) of the typer parameter for field ``f``."""
    help_ = f.metadata.get("help")
    if not help_:
        raise TypeError(f"{config.__name__}.{f.name} has no help (use tvlens.runs.config.opt).")
    flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
    default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    base, optional = _base(hint)
    values = field_choices(config, f.name)
    kw: dict[str, Any] = {"help": help_}
    repeat = False
    if values is not None and "sep" in f.metadata:  # "a,b" of the allowed values
        ann, kw["parser"] = str, _split(flag, str, choice(values, flag.lstrip("-")))
        kw["metavar"] = "[" + "|".join(map(str, values)) + "],..."
        default = None if default is None else ",".join(map(str, default))
    elif values is not None:
        ann: Any = str
        metavar = "[" + "|".join(map(str, values)) + "]"
        kw.update(parser=choice(values, flag.lstrip("-")), metavar=metavar)
    elif "sep" in f.metadata:  # a list written "a,b,c"
        cast = (get_args(base) or (str,))[0]
        ann, kw["parser"], kw["metavar"] = str, _split(flag, cast), f"{cast.__name__},..."
        default = None if default is None else ",".join(map(str, default))
    elif base in (int, float, str, bool):
        ann = base
    elif get_origin(base) is tuple and get_args(base)[-1] is Ellipsis:  # repeat the option
        ann, repeat = list[get_args(base)[0]], True
        default, optional = (None if default is None else list(default)), True
        kw["metavar"] = get_args(base)[0].__name__
    elif get_origin(base) is tuple:
        ann = base
    else:  # dicts, unions of records...: JSON
        or_text = str in get_args(base)
        ann, kw["parser"] = str, _json(flag, or_text)
        kw["metavar"] = "NAME|JSON" if or_text else "JSON"
        default = None if default is None else json.dumps(default)
    if overrides:
        default, optional = None, True
        kw["help"] = re.sub(r" ?\(default: [^)]*\)", "", help_) + " (default: the preset's)"
        if ann is bool and "/" not in flag:
            flag = f"{flag}/--no-{flag.removeprefix('--')}"
    if optional:
        ann = ann | None
    names = [flag, *([f.metadata["alias"]] if "alias" in f.metadata else [])]
    return Annotated[ann, typer.Option(*names, **kw)], default, repeat


def config_options(
    config: type,
    *,
    only: Collection[str] | None = None,
    skip: Collection[str] = (),
    overrides: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``config``'s fields (``only`` these, less ``skip``) to a command as options; the
    command's ``config`` parameter receives the config made from them (``overrides=True``: the
    dict of the options given)."""
    hints = typing.get_type_hints(config)
    chosen = [f for f in fields(config) if (only is None or f.name in only) and f.name not in skip]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for name, p in sig.parameters.items() if name != "config"]
        taken = {p.name for p in own}
        params = list(own)
        repeated: set[str] = set()
        for f in chosen:
            if f.name in taken:
                raise TypeError(f"{fn.__name__} has its own {f.name!r}; skip it in config_options.")
            ann, default, repeat = _option(config, f, hints[f.name], overrides)
            if repeat:
                repeated.add(f.name)
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                            default=default, annotation=ann))  # fmt: skip

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {f.name: kwargs.pop(f.name) for f in chosen}
            for k in repeated:  # repeatable options; none given: the default
                values[k] = tuple(values[k] or ()) or None
            if overrides:
                kwargs["config"] = {k: v for k, v in values.items() if v is not None}
            else:
                try:
                    kwargs["config"] = config(**values)
                except TypeError as e:  # pragma: no cover - a field the CLI cannot fill
                    raise ConfigError(str(e)) from None
            return fn(**kwargs)

        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
