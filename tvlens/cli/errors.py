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
from tvlens.tasks.registry import check_suite_name


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with tvlens errors turned into one red ``error: ...`` line and exit code 2."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:  # a bad model or suite name, before torch and TransformerLens are imported
            check_model_name(kwargs.get("model"))
            suites = kwargs.get("suites") or [kwargs.get("suite")]
            for suite in suites:  # paths only: a config may take names get_suite does not
                if isinstance(suite, str) and (is_path_name(suite) or suite.endswith(".json")):
                    check_suite_name(suite)
        except TVLensError as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
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
