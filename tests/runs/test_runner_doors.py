"""Cheap checks before heavy imports (issue 29): every runner, imported from its package in a
fresh interpreter, refuses a bad model path, a bad suite path and a user's folder as ``out``
with the right :class:`~tvlens.errors.TVLensError` before torch, transformers or
TransformerLens are imported, and leaves the user's folder byte-identical. (The times are
measured by ``bench/name_checks.py``; here the property that makes them short: nothing heavy
was imported.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# runner: (package, function, its inputs)
RUNNERS = {
    "run_task_vectors": ("tvlens.injection", "model suite out"),
    "run_patching": ("tvlens.patching", "model suite out"),
    "run_probe": ("tvlens.probing", "model suite out"),
    "run_eval": ("tvlens.evaluation", "model suite out"),
    "train_synthetic": ("tvlens.training", "out"),
}

SCRIPT = """
import json, sys
from {package} import {fn} as run
cases = json.loads(sys.argv[1])
found = {{}}
for what, args in cases.items():
    try:
        run(*args)
        found[what] = None
    except Exception as e:
        found[what] = [type(e).__name__, [c.__name__ for c in type(e).__mro__], str(e)]
heavy = [m for m in ("torch", "transformers", "transformer_lens") if m in sys.modules]
print(json.dumps({{"found": found, "heavy": heavy}}))
"""


@pytest.mark.parametrize("fn", sorted(RUNNERS))
def test_runner_refuses_bad_paths_before_torch(fn, tmp_path):
    package, inputs = RUNNERS[fn]
    (tmp_path / "runs" / "tiny").mkdir(parents=True)  # a folder: the model check passes
    mine = tmp_path / "mine"  # a user's folder, with files named as tvlens's
    mine.mkdir()
    for name in ("results.json", "td.json", "patching.json", "notes.txt"):
        (mine / name).write_text('{"mine": true}\n')
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    user_out = "mine/results.json" if fn == "run_eval" else "mine"  # eval writes one file
    cases = {"out": ["mine"]} if inputs == "out" else {
        "model": ["/does/not/exist", "new-out", "latent"],
        "suite": ["runs/tiny", "new-out", "runs/nosuite.json"],
        "out": ["runs/tiny", user_out, "latent"],
    }  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = SCRIPT.format(package=package, fn=fn)
    res = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    expected = {"model": "ModelLoadError", "suite": "UnknownTaskError", "out": "OutputError"}
    for what in cases:
        assert got["found"][what] is not None, f"{fn} accepted a bad {what}"
        name, mro, message = got["found"][what]
        assert name == expected[what], message
        assert "TVLensError" in mro
    assert "nosuite.json" in got["found"].get("suite", [None, None, "nosuite.json"])[2]
    assert got["heavy"] == []  # refused before torch, transformers, TransformerLens
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before
    assert not (tmp_path / "new-out").exists()  # nothing created by a refused call


# runner: (the stage's module that does the work, the CLI command that runs it)
STAGES = {
    "run_task_vectors": ("evaluate", "vectors"),
    "run_patching": ("run", "patch"),
    "run_probe": ("run", "probe"),
    "run_eval": ("icl", "eval"),
    "train_synthetic": ("train", "train-synthetic"),
}


@pytest.mark.parametrize("fn", sorted(RUNNERS))
def test_each_runner_is_written_once_and_is_the_cli_s(fn):
    """One definition per runner (issue 30): the package's name is its ``runner`` module's
    function (signature, defaults and docstring written there only), the stage's module that
    does the work defines no second one, and the CLI command calls that same function."""
    import importlib

    from typer.main import get_command

    from tvlens.cli import app

    package = RUNNERS[fn][0]
    stage, command = STAGES[fn]
    runner = importlib.import_module(f"{package}.runner")
    assert getattr(importlib.import_module(package), fn) is getattr(runner, fn)
    assert getattr(runner, fn).__module__ == f"{package}.runner"
    assert not hasattr(importlib.import_module(f"{package}.{stage}"), fn)
    assert get_command(app).commands[command].callback.runner == f"{package}.runner:{fn}"
