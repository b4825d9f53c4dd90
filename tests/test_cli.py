"""The console script: --help everywhere, and each command as a thin layer over the API."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tvlens.cli import app

runner = CliRunner()
COMMANDS = ["demo", "train-synthetic", "eval", "vectors", "probe", "patch", "suites", "info"]


def test_top_level_help_lists_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for c in COMMANDS:
        assert c in res.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_suites_lists_builtin_suites():
    res = runner.invoke(app, ["suites"])
    assert res.exit_code == 0
    for s in ["latent", "bitwise", "lists", "words"]:
        assert f"{s}:" in res.output


def test_unknown_suite_is_a_one_line_error():
    res = runner.invoke(app, ["suites", "nope"])
    assert res.exit_code == 2
    assert "Unknown suite 'nope'" in res.output
    assert "Traceback" not in res.output


def test_train_eval_info_vectors_on_tiny(tmp_path):
    run = tmp_path / "run"
    train = ["train-synthetic", "--out", str(run), "--preset", "tiny", "--steps", "15"]
    res = runner.invoke(app, [*train, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (run / "metrics.json").is_file()
    out = tmp_path / "eval.json"
    res = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(run),
            "--k",
            "4",
            "--n-prompts",
            "8",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data["tasks"]) == {f"latent_{i}" for i in range(4)}
    assert data["model"]["step"] == 15
    res = runner.invoke(app, ["info", "--model", str(run), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "step15" in res.output and "blocks.0.hook_resid_post" in res.output
    vec_dir = tmp_path / "vectors"
    res = runner.invoke(
        app,
        [
            "vectors",
            "--model",
            str(run),
            "--out",
            str(vec_dir),
            "--method",
            "both",
            "--k",
            "2",
            "--n-extract",
            "4",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    results = json.loads((vec_dir / "results.json").read_text())
    assert set(results["tasks"]) == set(data["tasks"])
    assert (vec_dir / "vectors" / "fv" / "latent_0.safetensors").is_file()
    assert "| mean |" in res.output
    res = runner.invoke(
        app,
        [
            "vectors",
            "--model",
            str(run),
            "--out",
            str(vec_dir),
            "--method",
            "nope",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 2 and "Unknown method" in res.output
    # A second run into the same folder without --resume is refused with a clear message.
    res = runner.invoke(app, [*train, "--device", "cpu"])
    assert res.exit_code == 2 and "--resume" in res.output


def test_missing_model_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["eval", "--model", str(tmp_path / "nothing"), "--suite", "latent"])
    assert res.exit_code == 2
    assert "does not exist" in res.output
