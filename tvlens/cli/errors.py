"""The one error decorator of every ``tvlens`` command: tvlens errors print as one line (exit
code 2) instead of a traceback, and a command says once, at the end, when figures were written
without PNGs."""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from typing import Any

import typer

from tvlens.errors import ConfigError, TVLensError

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _missing_path(options: dict[str, Any]) -> str | None:
    """The error for a ``--model`` that is written as a path (``./``, ``/``, ``~``) and does
    not exist: the same words as ``load_model``, without loading anything. (``--run`` is an
    output folder in some commands, so it is left to them.)"""
    import os

    for key in ("model",):
        value = options.get(key)
        if not isinstance(value, str | os.PathLike):
            continue
        name = str(value)
        if name.startswith((".", "/", "~")) or "\\" in name:
            if not os.path.exists(os.path.expanduser(name)):
                return (
                    f"Model folder {name!r} does not exist. Give an existing folder, a tvlens "
                    "training run, or an HF hub name."
                )
    return None


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with tvlens errors turned into one red ``error: ...`` line and exit code 2."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        missing = _missing_path(kwargs)
        if missing is not None:  # before torch and TransformerLens are imported (seconds)
            typer.secho(f"error: {missing}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2)
        from tvlens.plotting import PNG_HINT, PngWarning, png_skipped_reason

        png_skipped_reason(clear=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PngWarning)  # said once below
                return fn(*args, **kwargs)
        except TVLensError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
        finally:
            reason = png_skipped_reason(clear=True)
            if reason is not None:
                typer.echo(f"note: figures written as HTML only ({reason}); {PNG_HINT}.")

    return run


def registrar(app: typer.Typer) -> Callable[[str | None], Decorator]:
    """``command(name)``: register a function as a command of ``app``, with
    :func:`one_line_errors`."""

    def command(name: str | None = None) -> Decorator:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            return app.command(name)(one_line_errors(fn))

        return register

    return command


def json_option(text: str, option: str, example: str | None = None) -> Any:
    """An option's JSON value, or one line naming the option (and an example)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        hint = f": e.g. {example}." if example else "."
        raise ConfigError(f"{option} is not valid JSON ({e}){hint}") from None


def number_list(text: str, option: str, cast: Callable[[str], Any], expected: str) -> list:
    """An option's comma-separated numbers, or one line naming the option and what it
    expects (``expected``, e.g. "comma-separated integers")."""
    try:
        return [cast(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} must be {expected}, got {text!r}.") from None
