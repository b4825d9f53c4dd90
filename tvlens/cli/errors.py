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
from tvlens.models.pretrained import missing_model_folder
from tvlens.runs import created_count, discard_unused_folders


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with tvlens errors turned into one red ``error: ...`` line and exit code 2."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        missing = missing_model_folder(kwargs.get("model") or "")
        if missing is not None:  # before torch and TransformerLens are imported (seconds)
            typer.secho(f"error: {missing}", fg=typer.colors.RED, err=True)
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
