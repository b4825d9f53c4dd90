"""Help as a terminal shows it (no reST, one metavar style), every --out required, and
``tvlens eval``'s k defaulting to the model's training k, as the names table says."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from tvlens.cli import app
from tvlens.cli.options import plain_help

runner = CliRunner()
COMMANDS = [
    ["demo"], ["train-synthetic"], ["eval"], ["vectors"], ["probe"], ["train-regression"],
    ["emergence"], ["patch"], ["suites"], ["info"], ["atv", "train"], ["atv", "eval"],
    ["atv", "compare"], ["atv", "distill"], ["pretrained", "vectors"], ["pretrained", "combine"],
    ["pretrained", "decodability"], ["pretrained", "heads"], ["pretrained", "finetune"],
]  # fmt: skip


def _help(command: list[str]) -> str:
    res = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_no_rest_markup_and_one_metavar_style(command):
    text = _help(command)
    assert "``" not in text and not re.search(r":(func|class|meth|mod):`", text), text
    # Every value placeholder is <type> (click's own style), never a bare `str` or list[...].
    assert not re.search(r"--[\w-]+ (str|int|float|path)\b", text), text
    assert not re.search(r"--[\w-]+ <list\[", text), text


def test_plain_help():
    assert plain_help("Run it (``tvlens vectors``; :func:`tvlens.x.f`, :class:`~a.B`).") == (
        "Run it (`tvlens vectors`; `tvlens.x.f`, `a.B`)."
    )


@pytest.mark.parametrize("command", [["atv", "compare"], ["atv", "distill"]], ids=" ".join)
def test_out_is_required_as_everywhere(command, tmp_path):
    """``atv compare`` had ``--out runs/compare`` by default, alone among the commands."""
    assert "--out <path>" in _help(command) and "[required]" in _help(command)
    res = runner.invoke(app, [*command, "--target", str(tmp_path), "--preset", "tiny"])
    assert res.exit_code == 2 and "Missing option '--out'" in res.output


def test_eval_k_defaults_to_the_models_training_k(tmp_path):
    run = tmp_path / "run"
    train = ["train-synthetic", "--out", str(run), "--preset", "tiny", "--steps", "5"]
    assert runner.invoke(app, [*train, "--device", "cpu"]).exit_code == 0
    out = tmp_path / "eval.json"
    args = ["eval", "--model", str(run), "--n-prompts", "2", "--device", "cpu", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["k"] == 4  # the tiny preset trains with k=4, not 5
