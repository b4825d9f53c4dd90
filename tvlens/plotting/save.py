"""Plotly figures, saved as interactive HTML always and as static PNG when possible.

The HTML carries plotly.js inside it (no CDN): it opens offline and from a copied folder.

PNG export goes through kaleido (the ``png`` extra), which drives a Chrome/Chromium it finds
on the machine (``bash install.sh --png`` installs both). Without either, HTML is still
written, the PNG is skipped with one :class:`PngWarning` (unless ``require_png=True``), and
kaleido is never started, so it never tries to fetch a browser. ``TVLENS_NO_PNG=1`` takes the
same path on a machine that has a browser, without the warning (the user asked for it). Each
folder's ``figures.json`` records which files were written.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

import tvlens
from tvlens.runs import (
    VERSION_KEY,
    claim_file,
    write_json,  # noqa: F401  (write_json's old import path)
)

NO_PNG_ENV = "TVLENS_NO_PNG"  # "1": write HTML only, as on a machine without a browser
PNG_HINT = (
    "for PNG figures run `bash install.sh --png` (kaleido and Chromium), or in your own "
    "environment `pip install 'tvlens[png]'` with a Chrome/Chromium on the machine"
)
FIGURES_FILE = "figures.json"
NO_PNG_REASON = f"{NO_PNG_ENV} is set"


class PngWarning(UserWarning):
    """PNG figures were not written (HTML figures were)."""


@dataclass(frozen=True)
class SavedFigure:
    html: Path
    png: Path | None
    png_skipped: str | None = None  # why there is no PNG


# Why PNGs were skipped in this process (the CLI prints it once after a command).
_skipped: list[str] = []


def png_unavailable() -> str | None:
    """Why PNG figures cannot be written here (None when they can): ``TVLENS_NO_PNG`` is set,
    or kaleido finds no Chrome/Chromium. Looks only; never downloads a browser."""
    if os.environ.get(NO_PNG_ENV, "").strip().lower() in ("1", "true", "yes"):
        return NO_PNG_REASON
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:
        return "kaleido is not installed"
    try:
        found = Chromium.find_browser(skip_local=False)
    except Exception:  # a broken browser install reads as none
        found = None
    return None if found else "no Chrome/Chromium found"


def use_notebook_renderer() -> str:
    """Show figures in a notebook so that they survive without the network: plotly.js inside
    the notebook (``notebook``, not the CDN), plus a PNG of each figure where one can be made
    (``notebook+png``: the PNG is what GitHub and other static viewers show). Returns the
    renderer set as ``plotly.io.renderers.default``."""
    import plotly.io as pio

    name = "notebook+png" if png_unavailable() is None else "notebook"
    pio.renderers.default = name
    return name


def png_skipped_reason(clear: bool = False) -> str | None:
    """Why PNGs were skipped since the last ``clear`` (None if none were)."""
    reason = _skipped[-1] if _skipped else None
    if clear:
        _skipped.clear()
    return reason


def save_figure(
    fig: go.Figure,
    stem: str | Path,
    require_png: bool = False,
    width: int = 900,
    height: int = 500,
    scale: float = 2.0,
) -> SavedFigure:
    """Write ``stem.html`` (self-contained) always and ``stem.png`` when a browser is there
    (else :class:`PngWarning`, or an error with ``require_png``); record both in the folder's
    ``figures.json``."""
    stem = Path(stem)
    html, png_path = stem.with_suffix(".html"), stem.with_suffix(".png")
    _claim_figure(stem, html, png_path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(html, include_plotlyjs=True)  # self-contained: offline, no CDN
    png: Path | None = png_path
    reason = png_unavailable()
    if reason is None:
        try:
            fig.write_image(png, width=width, height=height, scale=scale)
        except Exception as e:  # kaleido raises several types when the browser fails
            reason = f"kaleido failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if reason is not None:
        if require_png:
            raise RuntimeError(f"Could not write {png} ({reason}): {PNG_HINT}.")
        png = None
        _skipped.append(reason)
        if reason == NO_PNG_REASON:  # asked for: nothing to warn about
            _record(stem, html, png, reason)
            return SavedFigure(html, png, reason)
        # One message for every figure, so that Python shows it once per process.
        warnings.warn(f"PNG not written ({reason}); HTML is. {PNG_HINT}.", PngWarning, 2)
    _record(stem, html, png, reason)
    return SavedFigure(html, png, reason)


def _claim_figure(stem: Path, *paths: Path) -> None:
    """The one rule for writing (tvlens.runs.claim_file): a figure's files are written when
    new, in a tvlens run folder, or listed in the tvlens-signed ``figures.json`` beside
    them (a figure saved there before); a user's file is never overwritten."""
    listed = _read_figures(stem.parent / FIGURES_FILE)
    mine = listed is not None and stem.name in listed
    for p in (*paths, stem.parent / FIGURES_FILE):
        if not (mine or (p.name == FIGURES_FILE and listed is not None)):
            claim_file(p)


def _read_figures(path: Path) -> dict | None:
    """``figures.json`` when tvlens wrote it (it carries the tvlens version), else None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and VERSION_KEY in data else None


def _record(stem: Path, html: Path, png: Path | None, reason: str | None) -> None:
    """Add this figure to ``figures.json`` beside it: which files exist, and why no PNG."""
    path = stem.parent / FIGURES_FILE
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        data = {}
    data[VERSION_KEY] = tvlens.__version__  # tvlens's signature (tvlens.runs.claim_file)
    data[stem.name] = {
        "html": html.name,
        "png": png.name if png is not None else None,
        "png_skipped": reason,
    }
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
