"""The demo on the tiny preset, and the quickstart notebook executed end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tvlens.demo import DemoResult, run_demo

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # over 20 s on 2 cores: `pytest -m slow`
def test_demo_writes_figures_report_and_json(tmp_path):
    res = run_demo(
        tmp_path / "figures", tmp_path / "run", preset="tiny", device="cpu", progress=False
    )
    figs = tmp_path / "figures"
    for name in ["icl_over_checkpoints", "accuracy_by_demo", "patching_heads", "patching_resid"]:
        assert (figs / f"{name}.html").stat().st_size > 1000
    report = (figs / "README.md").read_text()
    assert "icl_over_checkpoints.png" in report and "accuracy_by_demo.png" in report
    summary = json.loads((figs / "demo.json").read_text())
    assert summary["preset"] == "tiny"
    assert summary["checkpoint_steps"][-1] == summary["config"]["steps"]
    assert 0.0 <= summary["final_icl_evaluation"]["mean_first_token"] <= 1.0
    assert "patching_heads.png" in report and "Spearman" in report
    patching = json.loads((figs / "patching.json").read_text())
    assert patching["heads"]["exact"]["dims"] == ["layer", "head"]
    assert patching["resid"]["exact"]["dims"] == ["layer", "pos"]
    # Task encoding: the layer-wise probe and the emergence figure over a few checkpoints.
    for name in ["td_by_layer", "emergence"]:
        assert (figs / f"{name}.html").stat().st_size > 1000
        assert f"{name}.png" in report
    te = summary["task_encoding"]
    assert te["steps"][-1] == summary["config"]["steps"] and len(te["steps"]) <= 6
    assert len(te["td_by_layer"][-1]) == summary["config"]["n_layers"]
    # ATV on its synthetic setting: its own target and run next to the demo's run.
    atv = summary["atv"]
    assert (figs / "atv_comparison.html").stat().st_size > 1000
    assert "atv_comparison.png" in report and "above zero-shot on every task" in report
    assert list(atv["methods"]) == ["zero-shot", "icl-3", "atv"]
    zs, a = atv["methods"]["zero-shot"], atv["methods"]["atv"]
    assert atv["atv_minus_zero_shot"] >= 0.2 and a["mean_first_token"] >= 0.9
    for task, acc in a["tasks"].items():
        assert acc["first_token"] > zs["tasks"][task]["first_token"]
        assert acc["n"] == atv["queries_per_task"] == 50
    assert atv["trained_in_this_run"] and (tmp_path / "run-atv" / "atv.safetensors").is_file()
    # A second call reuses the finished runs (the demo's and ATV's) instead of training again.
    runs = [tmp_path / d / "metrics.json" for d in ("run", "run-atv-target", "run-atv")]
    mtimes = [m.stat().st_mtime_ns for m in runs]
    again = run_demo(figs, tmp_path / "run", preset="tiny", device="cpu", progress=False)
    assert [m.stat().st_mtime_ns for m in runs] == mtimes
    assert not again.summary["atv"]["trained_in_this_run"]
    for name, m in again.summary["atv"]["methods"].items():  # the same scores (not timings)
        assert m["tasks"] == atv["methods"][name]["tasks"]
    assert res.summary["config"]["steps"] == summary["config"]["steps"]
    # demo.json loads back through its result class (issue 29), the figures with it.
    loaded = DemoResult.load(figs / "demo.json")
    assert isinstance(loaded, DemoResult) and loaded.summary == again.summary
    assert loaded.figures == again.figures and loaded.figures_dir == figs
    assert list(loaded.to_dataframe()["task"])[-1] == "mean"


@pytest.mark.parametrize(
    "name",
    [
        # ~30 s: `-m slow` keeps the default run under 10 minutes
        pytest.param("01_quickstart.ipynb", marks=pytest.mark.slow),
        # ~32 s; its steps (extraction, layer sweeps, reports) have their own tests: run with
        # `-m slow` to keep the default run under 10 minutes
        pytest.param("02_task_vectors.ipynb", marks=pytest.mark.slow),
        # ~30 s; patching has its own tests (equal to TransformerLens's): `-m slow`
        pytest.param("04_patching.ipynb", marks=pytest.mark.slow),
    ],
)
def test_notebook_runs(name, tmp_path, run_notebook):
    run_notebook(name, tmp_path)
    assert os.listdir(tmp_path / "tiny" / "checkpoints")


def _resid_result(top: list[int]):
    """A [layer, pos] patching result over `a -> b c -> d q ->` whose largest effect in
    layer i is at position top[i]."""
    import torch

    from tvlens.patching.exact import PatchResult

    words = ["a", "->", "b", "c", "->", "d", "q", "->"]
    values = torch.zeros(len(top), len(words))
    for layer, pos in enumerate(top):
        values[layer, pos] = 0.5 + layer / 10
    labels = [f"{i} {w}" for i, w in enumerate(words)]
    return PatchResult(values, ("layer", "pos"), "resid", "each", "exact", "p", 0.9, 0.0,
                       list(range(len(top))), pos_labels=labels)  # fmt: skip


def test_patching_report_says_only_what_the_numbers_say():
    from tvlens.demo import resid_summary, top_position_by_layer

    moved = top_position_by_layer(_resid_result([2, 5, 7, 7]))
    assert [r["role"] for r in moved] == ["demonstration label"] * 2 + ["last token"] * 2
    assert [r["label"] for r in moved] == ["b", "d", "->", "->"]
    assert moved[3]["effect"] == pytest.approx(0.8)
    assert "blocks 0–1" in resid_summary(moved) and "from block 2 on" in resid_summary(moved)
    everywhere = top_position_by_layer(_resid_result([7, 7, 7]))
    assert resid_summary(everywhere) == "The last token has the largest effect in every block."
    # No pattern, no sentence: the last token first, or a position that is no label.
    for top in ([7, 2, 7], [0, 7, 7], [3, 3, 3], [2, 2, 2]):
        assert resid_summary(top_position_by_layer(_resid_result(top))) == "", top


def _atv_numbers(zero_shot: list[float], icl: list[float], atv: list[float]) -> dict:
    def method(acc: list[float]) -> dict:
        tasks = {t: {"first_token": x} for t, x in zip(["a", "b", "c"], acc, strict=True)}
        return {"mean_first_token": sum(acc) / len(acc), "tasks": tasks}

    return {"icl_k": 3, "methods": {"zero-shot": method(zero_shot), "icl-3": method(icl),
                                    "atv": method(atv)}}  # fmt: skip


def test_atv_report_says_only_what_the_numbers_say():
    from tvlens.demo import atv_summary

    best = atv_summary(_atv_numbers([0.2, 0.8, 0.5], [0.5, 0.1, 0.0], [1.0, 1.0, 0.9]))
    assert "above zero-shot on every task (mean 0.97 against 0.50, +0.47)" in best
    assert "3 demonstrations do not help" in best and "also above 3-shot ICL" in best
    mixed = atv_summary(_atv_numbers([0.2, 0.8, 0.5], [0.9, 0.9, 0.9], [1.0, 0.8, 0.9]))
    assert mixed == "ATV is above zero-shot on average (0.90 against 0.50) but not on b."
    worse = atv_summary(_atv_numbers([0.5, 0.5, 0.5], [0.9, 0.9, 0.9], [0.5, 0.4, 0.6]))
    assert worse == "ATV (0.50) is not above zero-shot (0.50) here."


def _without_timings(obj):
    """demo.json less what differs between two runs by design: wall times (``seconds``,
    ``*_seconds``, the task-vector report's costs ``extract_s``, ``latency_s``,
    ``added_latency_s``) and whether this call trained."""
    if isinstance(obj, dict):
        timing = ("seconds", "trained_in_this_run")
        return {k: _without_timings(v) for k, v in obj.items()
                if k not in timing and not k.endswith(("_seconds", "_s"))}  # fmt: skip
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


@pytest.mark.slow
def test_demo_is_deterministic(tmp_path, monkeypatch):
    """Two runs from scratch, same preset and thread count (one, tvlens's default), each in
    its own folder under the same relative names: the same numbers, to the last digit
    (~2 min on 2 idle cores)."""
    out = []
    for i in (1, 2):
        (tmp_path / str(i)).mkdir()
        monkeypatch.chdir(tmp_path / str(i))
        run_demo("fig", "run", preset="tiny", device="cpu", progress=False)
        out.append(json.loads(Path("fig/demo.json").read_text()))
    assert _without_timings(out[0]) == _without_timings(out[1])
    assert out[0]["run_dir"] == "run"  # relative as given: no machine path
    for name in ("patching.json", "figures.json", "task_vectors.md"):
        assert (tmp_path / "1" / "fig" / name).read_text() == (
            tmp_path / "2" / "fig" / name
        ).read_text()


def test_demo_writes_its_own_folder_and_keeps_the_readme_tail(tmp_path):
    """By default the demo writes to runs/demo, never into the committed figures/; rewriting
    a README keeps what follows the marker (sections the demo does not own)."""
    import inspect

    from tvlens.demo import DEMO_DIR, KEEP_MARKER, write_readme

    assert inspect.signature(run_demo).parameters["figures_dir"].default == DEMO_DIR
    assert DEMO_DIR.parts[0] == "runs"  # gitignored
    committed = (ROOT / "figures" / "README.md").read_text()
    assert KEEP_MARKER in committed and "## pretrained/" in committed.split(KEEP_MARKER)[1]
    readme = tmp_path / "README.md"
    write_readme(readme, "# report 1")
    assert readme.read_text() == "# report 1\n"
    readme.write_text(f"# report 1\n{KEEP_MARKER}\n## mine\nkept\n")
    write_readme(readme, "# report 2")
    assert readme.read_text() == f"# report 2\n{KEEP_MARKER}\n## mine\nkept\n"


# The committed figures equal today's code: keys exactly, numbers to this absolute tolerance
# (the demo is deterministic for a thread count, DEMO_TOLERANCE covers another CPU's float
# rounding in the 1800 training steps; timings are left out).
DEMO_TOLERANCE = 1e-3


def _numbers_close(a, b, path="demo.json"):
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            _numbers_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _numbers_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=DEMO_TOLERANCE), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.mark.slow
def test_committed_demo_figures_are_what_todays_code_writes(tmp_path, monkeypatch):
    """`tvlens regenerate`'s demo on the committed config, from scratch, one thread (about 10
    minutes on 2 idle cores): the same JSON keys and numbers as figures/demo.json."""
    committed = json.loads((ROOT / "figures" / "demo.json").read_text())
    monkeypatch.chdir(tmp_path)
    run_demo("figures", "runs/default", preset=committed["preset"], device="cpu",
             progress=False)  # fmt: skip
    fresh = json.loads(Path("figures/demo.json").read_text())
    _numbers_close(_without_timings(fresh), _without_timings(committed))


def test_docs_quote_the_committed_numbers():
    """Every number the README and the docs quote (`<!--q:KEY-->`) is the committed JSON's."""
    from tvlens.demo.quoted import pages, stale_quotes

    assert stale_quotes(ROOT) == []
    quoting = [p.name for p in pages(ROOT) if "<!--q:" in p.read_text()]
    assert {"README.md", "demo.md"} <= set(quoting)


def test_refill_writes_the_json_number_and_refuses_unknown_keys(tmp_path):
    from tvlens.demo.quoted import refill_docs, stale_quotes
    from tvlens.errors import TVLensError

    (tmp_path / "figures").mkdir()
    demo = json.loads((ROOT / "figures" / "demo.json").read_text())
    demo["task_vectors"]["summary"]["icl"] = 0.5
    (tmp_path / "figures" / "demo.json").write_text(json.dumps(demo))
    (tmp_path / "README.md").write_text("ICL <!--q:demo.icl-->0.99<!--/q--> here\n")
    assert stale_quotes(tmp_path) == ["README.md: demo.icl quotes '0.99', the JSON holds '0.50'"]
    assert refill_docs(tmp_path) == [tmp_path / "README.md"]
    assert (tmp_path / "README.md").read_text() == "ICL <!--q:demo.icl-->0.50<!--/q--> here\n"
    (tmp_path / "README.md").write_text("<!--q:demo.nope-->1<!--/q-->\n")
    with pytest.raises(TVLensError, match="unknown number 'demo.nope'"):
        refill_docs(tmp_path)


def test_committed_notebooks_show_no_warning_path_or_cdn():
    """The saved outputs of every notebook (executed by `python -m tvlens.demo.notebooks`)
    hold no warning, no machine path and no plotly.js from a CDN."""
    import nbformat

    from tvlens.demo.notebooks import output_problems

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert output_problems(nbformat.read(path, as_version=4)) == [], path.name


def test_output_problems_names_each_kind():
    from tvlens.demo.notebooks import output_problems

    nb = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "stream", "name": "stderr", "text": "TqdmWarning: IProgress not found"},
        {"output_type": "stream", "name": "stdout", "text": "saved /tmp/x/run"},
        {"output_type": "display_data", "data": {"text/html": '<script src="https://cdn.plot.ly/p.js">'}},
    ]}]}  # fmt: skip
    found = output_problems(nb)
    assert [p.split(":")[1].strip() for p in found] == [
        "a warning",
        "a machine path",
        "plotly.js from a CDN",
    ]


def test_executing_a_missing_notebook_is_refused_in_one_line(tmp_path):
    from tvlens.demo.notebooks import execute_notebooks
    from tvlens.errors import TVLensError

    (tmp_path / "notebooks").mkdir()
    with pytest.raises(TVLensError, match=r"No notebook \[.*nope\.ipynb'\]; the notebooks are in"):
        execute_notebooks(["nope.ipynb"], root=tmp_path)
