"""Figures: HTML always, PNG when a browser is there, and which of the two in figures.json.

The no-browser path is forced (``TVLENS_NO_PNG``, or kaleido's browser search finding
nothing) so it is tested on every machine; the PNG path runs where a browser is installed
(``bash install.sh --png``) and is skipped only where there is truly none.
"""

from __future__ import annotations

import json
import sys
import warnings

import plotly.graph_objects as go
import pytest

import tvlens
import tvlens.plotting as plotting
from tvlens.plotting import NO_PNG_ENV, PngWarning, png_unavailable, save_figure


def _fig() -> go.Figure:
    return go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 3, 2]))


def _never(*args, **kwargs):
    raise AssertionError("kaleido was started (or asked to download a browser)")


@pytest.fixture
def no_kaleido(monkeypatch):
    """Fail if anything starts kaleido or fetches Chrome."""
    import kaleido
    import plotly.io

    monkeypatch.setattr(go.Figure, "write_image", _never)
    monkeypatch.setattr(kaleido, "get_chrome_sync", _never)
    monkeypatch.setattr(plotly.io, "get_chrome", _never)


def _check_html_only(tmp_path, reason: str, warns: bool = True) -> None:
    if warns:
        with pytest.warns(PngWarning, match=r"PNG not written .*bash install.sh --png"):
            saved = save_figure(_fig(), tmp_path / "fig")
    else:  # the user asked for HTML only: nothing to warn about
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            saved = save_figure(_fig(), tmp_path / "fig")
    assert saved.png is None and saved.png_skipped == reason
    assert saved.html.stat().st_size > 1000 and not (tmp_path / "fig.png").exists()
    # Self-contained: plotly.js is in the file, nothing is fetched from a CDN.
    html = saved.html.read_text()
    assert 'src="https://cdn.plot.ly' not in html and len(html) > 1_000_000
    record = json.loads((tmp_path / "figures.json").read_text())
    assert record == {"fig": {"html": "fig.html", "png": None, "png_skipped": reason},
                      "tvlens": tvlens.__version__}  # fmt: skip
    assert plotting.png_skipped_reason(clear=True) == reason
    with pytest.raises(RuntimeError, match="bash install.sh --png"):
        save_figure(_fig(), tmp_path / "fig2", require_png=True)


def test_forced_no_png(tmp_path, monkeypatch, no_kaleido):
    monkeypatch.setenv(NO_PNG_ENV, "1")
    _check_html_only(tmp_path, f"{NO_PNG_ENV} is set", warns=False)


def test_no_browser_found(tmp_path, monkeypatch, no_kaleido):
    from choreographer.browsers.chromium import Chromium

    monkeypatch.delenv(NO_PNG_ENV, raising=False)
    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **kw: None))
    assert png_unavailable() == "no Chrome/Chromium found"
    _check_html_only(tmp_path, "no Chrome/Chromium found")


def test_without_kaleido(tmp_path, monkeypatch):
    """kaleido is the optional `png` extra: without it figures are HTML, with the hint."""
    monkeypatch.delenv(NO_PNG_ENV, raising=False)
    for name in ("choreographer", "choreographer.browsers", "choreographer.browsers.chromium"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it now fails
    monkeypatch.setitem(sys.modules, "kaleido", None)
    assert png_unavailable() == "kaleido is not installed"
    _check_html_only(tmp_path, "kaleido is not installed")
    assert "pip install 'tvlens[png]'" in plotting.PNG_HINT


def test_png_with_a_browser(tmp_path, monkeypatch):
    monkeypatch.delenv(NO_PNG_ENV, raising=False)
    if png_unavailable() is not None:
        pytest.skip(f"no PNG export here ({png_unavailable()}): bash install.sh --png")
    saved = save_figure(_fig(), tmp_path / "fig", require_png=True)
    assert saved.png is not None and saved.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((tmp_path / "figures.json").read_text())
    assert record["fig"] == {"html": "fig.html", "png": "fig.png", "png_skipped": None}


@pytest.mark.parametrize("with_accuracy", [True, False])
def test_emergence_figure_rows(with_accuracy):
    """Per task: TD on row 1, loss on row 2, accuracy on row 3 (token suites only)."""
    from tvlens.plotting import plot_emergence

    em = {
        "peak_layer": 1, "layers": [0, 1], "steps": [1, 10, 100], "tasks": ["a", "b"],
        "kind": "x", "td": [[0.1, 0.2]] * 3,
        "td_per_task": [[{"a": 0.1, "b": 0.2}, {"a": 0.3, "b": 0.4}]] * 3,
        "loss": [{"a": 1.0, "b": 2.0}] * 3,
        "accuracy": [{"a": 0.5, "b": 0.6}] * 3 if with_accuracy else None,
    }  # fmt: skip
    fig = plot_emergence(em)
    rows = {"y": 0.3, "y2": 1.0, "y3": 0.5}
    a_traces = [t for t in fig.data if t.name == "a"]
    assert [t.yaxis or "y" for t in a_traces] == ["y", "y2", "y3"][: 3 if with_accuracy else 2]
    for t in a_traces:
        assert list(t.y) == [rows[t.yaxis or "y"]] * 3


def test_notebook_renderer_bundles_plotly_and_adds_png_with_a_browser(monkeypatch):
    """Notebook figures never load plotly.js from a CDN; a PNG rides along where one can be
    made (what GitHub shows)."""
    import plotly.io as pio

    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)  # restored after
    monkeypatch.setattr(plotting.save, "png_unavailable", lambda: "no Chrome/Chromium found")
    assert plotting.use_notebook_renderer() == "notebook" == pio.renderers.default
    monkeypatch.setattr(plotting.save, "png_unavailable", lambda: None)
    assert plotting.use_notebook_renderer() == "notebook+png" == pio.renderers.default
