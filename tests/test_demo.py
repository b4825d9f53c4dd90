"""The demo on the tiny preset, and the quickstart notebook executed end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tvlens.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]


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
    # A second call reuses the finished run instead of training again.
    mtime = (tmp_path / "run" / "metrics.json").stat().st_mtime_ns
    run_demo(figs, tmp_path / "run", preset="tiny", device="cpu", progress=False)
    assert (tmp_path / "run" / "metrics.json").stat().st_mtime_ns == mtime
    assert res.summary["config"]["steps"] == summary["config"]["steps"]


@pytest.mark.parametrize(
    "name", ["01_quickstart.ipynb", "02_task_vectors.ipynb", "04_patching.ipynb"]
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
