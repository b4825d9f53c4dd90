"""The one error decorator of every ``tvlens`` command: tvlens errors print as one line (exit
code 2) instead of a traceback, and a command says once, at the end, when figures were written
without PNGs."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import typer

from tvlens.errors import TVLensError
from tvlens.models.sources import check_model_name, is_path_name
from tvlens.runs import (
    FILE_KINDS,
    check_out_dir,
    check_out_file,
    created_count,
    discard_unused_folders,
)
from tvlens.tasks.registry import check_suite_name


def _early_error(kwargs: dict[str, Any], writes: dict[str, str] | None) -> str | None:
    """What can be refused before torch and TransformerLens are imported (seconds): a bad
    model or suite name, an output folder or file the command may not write."""
    try:
        check_model_name(kwargs.get("model"))
        suites = kwargs.get("suites") or [kwargs.get("suite")]
        for suite in suites:  # paths only: a config may take names get_suite does not
            if isinstance(suite, str) and (is_path_name(suite) or suite.endswith(".json")):
                check_suite_name(suite)
    except TVLensError as e:
        return str(e)
    for name, kind in (writes or {}).items():
        if kwargs.get(name) is None:
            continue
        try:
            (check_out_file if kind in FILE_KINDS else check_out_dir)(kwargs[name], kind)
        except TVLensError as e:
            return str(e)
    return None


def one_line_errors(
    fn: Callable[..., Any], writes: dict[str, str] | None = None
) -> Callable[..., Any]:
    """``fn`` with tvlens errors turned into one red ``error: ...`` line and exit code 2;
    ``writes`` (input name: run kind) checked first, before the heavy imports."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        early = _early_error(kwargs, writes)
        if early is not None:
            typer.secho(f"error: {early}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2)
        from tvlens.plotting import PNG_HINT, PngWarning, png_skipped_reason

        png_skipped_reason(clear=True)
        since = created_count()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PngWarning)  # said once below
                return fn(*args, **kwargs)
        except TVLensError as e:
            discard_unused_folders(since)  # a failed command leaves no empty folder behind
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
        except BaseException:
            discard_unused_folders(since)
            raise
        finally:
            reason = png_skipped_reason(clear=True)
            if reason is not None:
                typer.echo(f"note: figures written as HTML only ({reason}); {PNG_HINT}.")

    return run
