"""The console script: --help everywhere, and each command as a thin layer over the API."""

from __future__ import annotations

import json
from pathlib import Path

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


@pytest.mark.slow  # over 20 s on 2 cores: `pytest -m slow`
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
            "--methods",
            "all",
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
    assert res.exit_code == 2 and "Unknown methods 'nope'" in res.output
    # The same command again returns the finished run (a rerun trains nothing); other
    # options into the same folder are refused in one line.
    before = (run / "metrics.json").read_text()
    res = runner.invoke(app, [*train, "--device", "cpu"])
    assert res.exit_code == 0 and "checkpoints in" in res.output, res.output
    assert (run / "metrics.json").read_text() == before
    res = runner.invoke(app, [*train[:-1], "16", "--device", "cpu"])
    assert res.exit_code == 2 and "different configuration (steps: 15 there, 16 now)" in (
        res.output
    ), res.output


def test_missing_model_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["eval", "--model", str(tmp_path / "nothing"), "--suite", "latent"])
    assert res.exit_code == 2
    assert "does not exist" in res.output


# ---------------------------------------------------------------------------- bad arguments


def _fake_folders(tmp_path):
    """Folders that cost nothing to make: a model folder (config.json only: the checks run
    before any weights load), a tvlens run of 2 layers without checkpoints, a user's folder,
    a file, and a suite folder holding a Latin-1 file."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    cfg = {"n_layers": 2, "suite": {"name": "latent", "n_tasks": 2}, "k": 4, "template": "arrow"}
    (run / "config.json").write_text(json.dumps({"tvlens": "0", "config": cfg}))
    user = tmp_path / "user"
    (user / "checkpoints").mkdir(parents=True)
    (user / "checkpoints" / "keep.txt").write_text("mine")
    (user / "notes.txt").write_text("notes")
    (user / "metrics.json").write_text('{"mine": 1}')
    afile = tmp_path / "a_file.txt"
    afile.write_text("x")
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "task.json").write_bytes(b'[{"input": "caf\xe9", "output": "x"}]')
    return {"model": model, "run": run, "user": user, "file": afile, "suite": suite}


BAD = {
    # name: (arguments, what the one line must say)
    "revision of a plain folder": (
        ["eval", "--model", "{model}", "--revision", "step1", "--suite", "latent"],
        "revision= applies to hub models and tvlens runs",
    ),
    "non-UTF-8 suite": (["suites", "{suite}"], "task.json' is not UTF-8 text"),
    "info on a folder without tokenizer files": (
        ["info", "--model", "{model}", "--device", "cpu"],
        "has no tokenizer files",
    ),
    "head-act": (
        ["patch", "--model", "{model}", "--out", "{tmp}/o", "--head-act", "x"],
        "Unknown head-act 'x': head-act must be one of z, q, k, v",
    ),
    "arch": (
        ["train-synthetic", "--out", "{tmp}/o", "--preset", "tiny", "--arch", "bogus"],
        "Unknown architecture 'bogus'",
    ),
    "mixture": (
        ["train-regression", "--out", "{tmp}/o", "--preset", "tiny", "--mixture", "bogus"],
        "Unknown mixture 'bogus'",
    ),
    "emergence on a folder that is not a run": (
        ["emergence", "--run", "{user}", "--out", "{tmp}/o"],
        "is not a tvlens training run",
    ),
    "perturb-layer": (
        ["emergence", "--run", "{run}", "--out", "{tmp}/o", "--perturb-layer", "99"],
        "perturb_layer=99 is out of range",
    ),
    "out is a file": (
        ["train-synthetic", "--out", "{file}", "--preset", "tiny"],
        "is an existing file, not a folder",
    ),
    "out cannot be made": (
        ["vectors", "--model", "{model}", "--out", "{file}/sub"],
        "Cannot write to output folder",
    ),
    "device bogus": (
        ["eval", "--model", "{model}", "--device", "bogus", "--suite", "latent"],
        "Unknown device 'bogus'",
    ),
    "suite JSON": (
        ["train-synthetic", "--out", "{tmp}/o", "--preset", "tiny", "--suite", "{{bad"],
        "--suite is not valid JSON",
    ),
    "k=0 in patching": (
        ["patch", "--model", "{model}", "--out", "{tmp}/o", "--k", "0"],
        "k (--k) must be >= 2, got 0",
    ),
    "top-k-heads": (
        ["vectors", "--model", "{model}", "--out", "{tmp}/o", "--top-k-heads", "-3"],
        "top_k_heads (--top-k-heads) must be >= 1, got -3",
    ),
    "max-batch": (
        ["patch", "--model", "{model}", "--out", "{tmp}/o", "--max-batch", "0"],
        "max_batch (--max-batch) must be >= 1, got 0",
    ),
    "atv layers": (
        ["atv", "train", "--target", "{model}", "--out", "{tmp}/o", "--layers", "0,x"],
        "--layers must be comma-separated integers, got '0,x'",
    ),
    "atv suite JSON": (
        ["atv", "eval", "--run", "{tmp}/o", "--suite", "{{bad"],
        "--suite is not valid JSON",
    ),
    "pretrained split": (
        ["pretrained", "vectors", "--model", "{model}", "--out", "{tmp}/o", "--split", "a,b"],
        "--split must be comma-separated numbers, got 'a,b'",
    ),
    "pretrained split size": (
        ["pretrained", "vectors", "--model", "{model}", "--out", "{tmp}/o", "--split", "0.5,0.5"],
        "split must be three positive fractions summing to at most 1",
    ),
}
if not __import__("torch").cuda.is_available():
    BAD["cuda on a CPU-only machine"] = (
        ["train-synthetic", "--out", "{tmp}/o", "--preset", "tiny", "--device", "cuda"],
        "Device 'cuda' is not available on this machine: use --device cpu",
    )


def _one_line_error(res, says: str) -> None:
    assert res.exit_code == 2, res.output
    assert (
        "Traceback" not in res.output
        and res.exception is None
        or isinstance(res.exception, SystemExit)
    )
    lines = [x for x in res.output.splitlines() if x.startswith(("error:", "Error:"))]
    assert len(lines) == 1 and says in lines[0], res.output


@pytest.mark.parametrize("case", list(BAD))
def test_bad_argument_is_one_line(case, tmp_path):
    where = {k: str(v) for k, v in _fake_folders(tmp_path).items()} | {"tmp": str(tmp_path)}
    args, says = BAD[case]
    res = runner.invoke(app, [a.format(**where) for a in args])
    _one_line_error(res, says)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


WRITERS = {
    "train-synthetic": ["train-synthetic", "--preset", "tiny", "--device", "cpu"],
    "train-regression": ["train-regression", "--preset", "tiny", "--device", "cpu"],
    "vectors": ["vectors", "--model", "{model}"],
    "probe": ["probe", "--model", "{model}"],
    "patch": ["patch", "--model", "{model}"],
    "emergence": ["emergence", "--run", "{run}"],
    "demo": ["demo", "--preset", "tiny", "--run-dir", "{tmp}/r", "--figures-dir"],
    "atv train": ["atv", "train", "--target", "{model}", "--device", "cpu"],
    "atv compare": ["atv", "compare", "--target", "{model}", "--preset", "tiny"],
}


@pytest.mark.parametrize("command", list(WRITERS))
def test_no_command_writes_into_a_users_folder(command, tmp_path):
    where = {k: str(v) for k, v in _fake_folders(tmp_path).items()} | {"tmp": str(tmp_path)}
    user = tmp_path / "user"
    before = {p: p.read_bytes() for p in user.rglob("*") if p.is_file()}
    args = [a.format(**where) for a in WRITERS[command]]
    args += [str(user)] if command == "demo" else ["--out", str(user)]
    res = runner.invoke(app, args)
    _one_line_error(res, "is not empty and holds files tvlens did not write")
    assert {p: p.read_bytes() for p in user.rglob("*") if p.is_file()} == before
    res = runner.invoke(app, ["eval", "--model", str(tmp_path / "model"), "--out",
                              str(user / "metrics.json")])  # fmt: skip
    _one_line_error(res, "exists and is not a tvlens eval result")
    assert (user / "metrics.json").read_text() == '{"mine": 1}'


@pytest.mark.slow  # over 20 s on 2 cores: `pytest -m slow`
def test_probe_a_plain_model_folder(make_tiny, letters_tokenizer, tmp_path):
    """An HF folder is probed as it is (it used to ask for revisions, then reject each)."""
    tiny = make_tiny("gpt2", "gpt2", letters_tokenizer)
    suite = tmp_path / "suite"
    suite.mkdir()
    letters = "abcdefghxy"
    for shift in (1, 2):
        pairs = [{"input": x, "output": letters[(i + shift) % 10]} for i, x in enumerate(letters)]
        (suite / f"shift{shift}.json").write_text(json.dumps(pairs))
    out = tmp_path / "out"
    args = ["probe", "--model", str(tiny.folder), "--out", str(out), "--suite", str(suite)]
    args += ["--k", "2", "--n-prompts", "6", "--device", "cpu"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    td = json.loads((out / "td.json").read_text())
    assert td["revisions"] == ["main"] and [len(row) for row in td["td"]] == [1, 1, 1]
    assert json.loads((out / "config.json").read_text())["kind"] == "probe"
    # The same folder again is a run of the same kind: allowed (results are rewritten).
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output


def test_missing_model_path_is_refused_before_heavy_imports(tmp_path):
    """A bad --model path answers as fast as --help: no torch or TransformerLens import."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "tvlens.cli"]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--help"], env=env, capture_output=True, check=True)
    help_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = subprocess.run(
        [*cmd, "info", "--model", str(tmp_path / "nothing")], env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    bad_s = time.perf_counter() - t0
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert bad_s < max(2.0, 3 * help_s), (bad_s, help_s)
