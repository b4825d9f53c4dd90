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


def test_light_runners_are_the_packages_and_the_cli_s():
    """The package's name is the light runner, which hands over to the stage's own (the same
    parameters, so that both take the same calls)."""
    import inspect

    from tvlens.evaluation import icl, run_eval
    from tvlens.injection import evaluate, run_task_vectors
    from tvlens.patching import run, run_patching
    from tvlens.probing import run as probe_run
    from tvlens.probing import run_probe
    from tvlens.training import train, train_synthetic

    pairs = [(run_task_vectors, evaluate.run_task_vectors), (run_patching, run.run_patching),
             (run_probe, probe_run.run_probe), (run_eval, icl.run_eval),
             (train_synthetic, train.train_synthetic)]  # fmt: skip
    for light, heavy in pairs:
        assert light.__module__.endswith(".runner")
        assert list(inspect.signature(light).parameters) == list(
            inspect.signature(heavy).parameters
        )
