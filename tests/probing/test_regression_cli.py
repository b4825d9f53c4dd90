"""``tvlens train-regression``, ``tvlens probe`` on a regression run, ``tvlens emergence``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tvlens.cli import app

runner = CliRunner()


def test_train_regression_probe_and_emergence_on_tiny(tmp_path):
    run = tmp_path / "run"
    res = runner.invoke(app, ["train-regression", "--out", str(run), "--preset", "tiny"])
    assert res.exit_code == 0, res.output
    assert "final MSE basis_0" in res.output
    res = runner.invoke(
        app, ["probe", "--model", str(run), "--out", str(tmp_path / "probe"), "--n-prompts", "12"]
    )
    assert res.exit_code == 0, res.output
    td = json.loads((tmp_path / "probe" / "td.json").read_text())
    assert len(td["td"]) == 2 and len(td["td"][0]) == len(td["revisions"])
    assert set(td["checkpoints"][-1]["accuracy"]) == {f"basis_{i}" for i in range(4)}
    for fig in ("td_by_layer", "td_heatmap", "td_vs_accuracy", "projection"):
        assert (tmp_path / "probe" / f"{fig}.html").is_file()
    out = tmp_path / "em"
    res = runner.invoke(
        app, ["emergence", "--run", str(run), "--out", str(out), "--n-prompts", "12"]
    )
    assert res.exit_code == 0, res.output
    assert "TD>=0.5" in res.output and "perturbation step" in res.output
    for f in (
        "emergence.json",
        "perturbation.json",
        "config.json",
        "emergence.html",
        "perturbation.html",
    ):
        assert (out / f).is_file(), f


def test_regression_cli_errors_are_one_line(tmp_path):
    res = runner.invoke(app, ["train-regression", "--out", str(tmp_path / "r"), "--preset", "huge"])
    assert res.exit_code == 2 and "Unknown regression preset" in res.output
    for cmd in ("train-regression", "emergence"):
        assert runner.invoke(app, [cmd, "--help"]).exit_code == 0
