"""No user file is ever overwritten (issue 29): a folder is a tvlens run only with tvlens's
signature, never by a file's name; every command and runner refuses a user's folder holding a
file of any name tvlens uses, and leaves it byte-identical; a failed command leaves no folder;
every main file a command writes loads back through its result class."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tvlens.cli import app
from tvlens.errors import OutputError
from tvlens.runs import LEGACY_MARKERS, RUN_MARKER, folder_kind

runner = CliRunner()


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _user_folder(path: Path, marker: str) -> Path:
    """A user's folder holding their own file named ``marker`` (a folder for ``cells``)."""
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("my notes")
    if marker == "cells":
        (path / "cells").mkdir()
        (path / "cells" / "mine.json").write_text('{"mine": true}')
    else:
        (path / marker).write_text('{"mine": true, "kind": "not tvlens"}')
    return path


def _one_line_error(res, says: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.startswith(("error:", "Error:"))]
    assert len(lines) == 1 and says in lines[0], res.output
    assert "Traceback" not in res.output


# Every command that writes a folder, with what it needs besides --out (the output is checked
# before the model, the run or the suite is read, so these may be placeholders).
COMMANDS = {
    "train-synthetic": ["train-synthetic", "--preset", "tiny"],
    "train-regression": ["train-regression", "--preset", "tiny"],
    "vectors": ["vectors", "--model", "{model}"],
    "probe": ["probe", "--model", "{model}"],
    "patch": ["patch", "--model", "{model}"],
    "emergence": ["emergence", "--run", "{model}"],
    "demo": ["demo", "--preset", "tiny", "--run-dir", "{tmp}/r", "--figures-dir"],
    "demo run-dir": ["demo", "--preset", "tiny", "--figures-dir", "{tmp}/f", "--run-dir"],
    "atv train": ["atv", "train", "--target", "{model}"],
    "atv compare": ["atv", "compare", "--target", "{model}", "--preset", "tiny"],
    "pretrained vectors": ["pretrained", "vectors", "--model", "{model}"],
    "pretrained combine": ["pretrained", "combine", "{model}"],
    "pretrained decodability": ["pretrained", "decodability", "--model", "{model}"],
    "pretrained heads": ["pretrained", "heads", "--model", "{model}"],
    "pretrained finetune": ["pretrained", "finetune", "--model", "{model}"],
}


@pytest.mark.parametrize("marker", LEGACY_MARKERS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_users_file_of_every_marker_name(command, marker, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    user = _user_folder(tmp_path / "user", marker)
    before = _hashes(user)
    args = [a.format(model=model, tmp=tmp_path) for a in COMMANDS[command]]
    args += [str(user)] if command.startswith("demo") else ["--out", str(user)]
    res = runner.invoke(app, args)
    _one_line_error(res, "nothing in it was changed")
    assert f"holds {marker} but not tvlens's signature" in res.output
    assert _hashes(user) == before
    assert not (tmp_path / "r").exists() and not (tmp_path / "f").exists()


def test_eval_refuses_a_users_json_file(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for name in ("results.json", "eval.json"):
        mine = tmp_path / name
        mine.write_text(json.dumps({"kind": "eval", "mine": 1}))  # a kind key is no signature
        res = runner.invoke(app, ["eval", "--model", str(model), "--out", str(mine)])
        _one_line_error(res, "exists and is not a tvlens eval result")
        assert json.loads(mine.read_text()) == {"kind": "eval", "mine": 1}


@pytest.fixture(scope="module")
def tiny_model(make_tiny, letters_tokenizer):
    return make_tiny("gpt2", "gpt2", letters_tokenizer).model


def _runners(model, letters_task, tmp: Path):
    """(name, call(out)) for every Python runner that writes a folder."""
    from tvlens.demo import run_demo
    from tvlens.experiments.pretrained import (
        head_comparison,
        task_decodability_table,
        vector_table,
    )
    from tvlens.injection import run_task_vectors
    from tvlens.patching import run_patching
    from tvlens.probing import run_probe
    from tvlens.probing.run import run_emergence
    from tvlens.tasks import TaskSuite
    from tvlens.training import train_synthetic
    from tvlens.training.regression import train_regression

    suite = TaskSuite("letters", (letters_task,))
    run = tmp / "fake-run"
    (run / "checkpoints").mkdir(parents=True)
    cfg = {"n_layers": 2, "suite": {"name": "latent", "n_tasks": 2}, "k": 4, "template": "arrow"}
    (run / "config.json").write_text(json.dumps({"tvlens": "0", "config": cfg}))
    return {
        "run_task_vectors": lambda out: run_task_vectors(model, out, suite, progress=False),
        "run_probe": lambda out: run_probe(model, out, suite, progress=False),
        "run_patching": lambda out: run_patching(model, out, suite, progress=False),
        "run_emergence": lambda out: run_emergence(run, out, progress=False),
        "run_demo": lambda out: run_demo(out, tmp / "demo-run", preset="tiny", progress=False),
        "train_synthetic": lambda out: train_synthetic(out, preset="tiny", progress=False),
        "train_regression": lambda out: train_regression(out, preset="tiny", progress=False),
        "vector_table": lambda out: vector_table(model, suite, out, progress=False),
        "task_decodability_table": lambda out: task_decodability_table(model, suite, out),
        "head_comparison": lambda out: head_comparison(model, suite, None, out),
    }


RUNNERS = ["run_task_vectors", "run_probe", "run_patching", "run_emergence", "run_demo",
           "train_synthetic", "train_regression", "vector_table", "task_decodability_table",
           "head_comparison"]  # fmt: skip


@pytest.mark.parametrize("runner_name", RUNNERS)
def test_every_python_runner_refuses_a_users_folder(runner_name, tiny_model, letters_task,
                                                    tmp_path):  # fmt: skip
    calls = _runners(tiny_model, letters_task, tmp_path)
    for marker in LEGACY_MARKERS:
        user = _user_folder(tmp_path / f"user-{marker}", marker)
        before = _hashes(user)
        with pytest.raises(OutputError, match=f"holds {marker} but not tvlens's signature"):
            calls[runner_name](user)
        assert _hashes(user) == before
        assert folder_kind(user) is None and not (user / RUN_MARKER).exists()
    assert not (tmp_path / "demo-run").exists()


def test_a_result_save_and_a_figure_never_overwrite_a_users_file(tiny_model, tmp_path):
    import plotly.graph_objects as go

    from tvlens.experiments.pretrained import HeadComparison
    from tvlens.plotting import save_figure

    series = HeadComparison({"tasks": {}, "note": "a result"})
    mine = tmp_path / "td.json"
    mine.write_text('{"mine": 1}')
    html = tmp_path / "fig.html"
    html.write_text("<p>mine</p>")
    before = _hashes(tmp_path)
    with pytest.raises(OutputError, match="exists and was not written by tvlens"):
        series.save(mine)
    with pytest.raises(OutputError, match="exists and was not written by tvlens"):
        save_figure(go.Figure(), tmp_path / "fig")
    assert _hashes(tmp_path) == before
    # what tvlens wrote itself may be written again
    saved = series.save(tmp_path / "mine2.json")
    assert series.save(saved) == saved and HeadComparison.load(saved).data == series.data
    assert save_figure(go.Figure(), tmp_path / "new").html.is_file()
    assert save_figure(go.Figure(), tmp_path / "new").html.is_file()


def test_save_hf_model_never_writes_into_a_users_folder(make_tiny, letters_tokenizer, tmp_path):
    """save_hf_model follows the folder rule: a folder holding files tvlens did not write (a
    user's own HF model, their notes) or another kind of run is refused and left
    byte-identical; a new folder is signed, saved, loads, and may be saved into again; a
    folder inside a tvlens run (a training run's checkpoints) is the run's."""
    from tvlens.models import load_model, save_hf_model
    from tvlens.runs import MODEL, VECTORS, prepare_out_dir

    tiny = make_tiny("gpt2", "gpt2", letters_tokenizer)
    hf, tok = tiny.hf, tiny.tokenizer
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"model_type": "mine", "note": "my own model"}')
    (mine / "notes.txt").write_text("my notes")
    vectors = prepare_out_dir(tmp_path / "vectors-run", VECTORS)
    (vectors / "results.json").write_text('{"a vectors run": 1}')
    before = _hashes(tmp_path)
    with pytest.raises(OutputError, match="holds files tvlens did not write"):
        save_hf_model(hf, tok, mine)
    with pytest.raises(OutputError, match="holds a tvlens vectors run, not a model run"):
        save_hf_model(hf, tok, vectors)
    with pytest.raises(OutputError, match="is an existing file"):
        save_hf_model(hf, tok, mine / "notes.txt")
    assert _hashes(tmp_path) == before and folder_kind(mine) is None
    new = save_hf_model(hf, tok, tmp_path / "saved" / "model")
    assert folder_kind(new) == MODEL and (new / "model.safetensors").is_file()
    assert save_hf_model(hf, tok, new) == new  # its own folder: saved again
    loaded = load_model(new, device="cpu")
    assert loaded.cfg.n_layers == tiny.model.cfg.n_layers
    step = vectors / "checkpoints" / "step-1"  # inside a tvlens run: the run's folder
    step.mkdir(parents=True)
    (step / "optimizer.pt").write_bytes(b"state")
    assert save_hf_model(hf, tok, step) == step and not (step / RUN_MARKER).exists()


def test_failed_commands_leave_no_folder(tiny_model, make_tiny, letters_tokenizer, tmp_path):
    from tvlens.demo import run_demo
    from tvlens.errors import TVLensError
    from tvlens.patching import run_patching

    res = runner.invoke(app, ["demo", "--preset", "bogus", "--run-dir", str(tmp_path / "a" / "r"),
                              "--figures-dir", str(tmp_path / "a" / "f")])  # fmt: skip
    assert res.exit_code == 2, res.output
    with pytest.raises(TVLensError, match="bogus"):
        run_demo(tmp_path / "b" / "f", tmp_path / "b" / "r", preset="bogus")
    folder = make_tiny("gpt2", "gpt2", letters_tokenizer).folder
    res = runner.invoke(app, ["vectors", "--model", str(folder), "--suite", "nope", "--out",
                              str(tmp_path / "c" / "deep" / "out"), "--device", "cpu"])  # fmt: skip
    _one_line_error(res, "nope")
    with pytest.raises(TVLensError, match="nope"):
        run_patching(tiny_model, tmp_path / "d" / "out", suite="nope", progress=False)
    empty = tmp_path / "e"
    empty.mkdir()  # the user's empty folder stays, as it was
    with pytest.raises(TVLensError, match="nope"):
        run_patching(tiny_model, empty, suite="nope", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"] and not any(empty.iterdir())


@pytest.mark.slow  # over 20 s on 2 cores: `pytest -m slow`
def test_every_command_output_loads_back_through_its_result_class(make_tiny, letters_tokenizer,
                                                                   tmp_path):  # fmt: skip
    """vectors, probe, patch and eval, run by the CLI on a tiny model: each main file loads
    back as its result, equal to what the run returned; a second run into the same folder is
    allowed (it is tvlens's own)."""
    from tvlens.evaluation.icl import ICLEvaluation
    from tvlens.injection.evaluate import VectorReport
    from tvlens.patching import PatchingRun
    from tvlens.probing.series import TDSeries

    folder = make_tiny("gpt2", "gpt2", letters_tokenizer).folder
    suite = tmp_path / "suite"
    suite.mkdir()
    letters = "abcdefghxy"
    for shift in (1, 2):
        pairs = [{"input": x, "output": letters[(i + shift) % 10]} for i, x in enumerate(letters)]
        (suite / f"shift{shift}.json").write_text(json.dumps(pairs))
    common = ["--model", str(folder), "--suite", str(suite), "--device", "cpu", "--k", "2"]
    cases = {
        "vectors": (["--n-extract", "2"], "results.json", VectorReport),
        "probe": (["--n-prompts", "6"], "td.json", TDSeries),
        "patch": (["--n-prompts", "2", "--component", "resid"], "patching.json", PatchingRun),
    }
    for command, (extra, name, cls) in cases.items():
        out = tmp_path / command
        for _ in range(2):  # the second run rewrites its own folder
            res = runner.invoke(app, [command, *common, *extra, "--out", str(out)])
            assert res.exit_code == 0, res.output
        loaded = cls.load(out / name)
        assert isinstance(loaded, cls) and folder_kind(out) == command
        assert json.loads((out / name).read_text())["tvlens_result"]["type"].endswith(cls.__name__)
        loaded.to_dataframe()  # a working result, not a bare dict
    out = tmp_path / "eval.json"
    for _ in range(2):
        res = runner.invoke(app, ["eval", *common, "--n-prompts", "4", "--out", str(out)])
        assert res.exit_code == 0, res.output
    ev = ICLEvaluation.load(out)
    assert json.loads(out.read_text())["kind"] == "eval" and ev.to_dataframe() is not None


def test_a_folder_where_a_file_is_read_says_so(tmp_path):
    from tvlens.errors import TVLensError
    from tvlens.extraction.vectors import TaskVector
    from tvlens.patching import PatchingRun

    run = tmp_path / "run"
    (run / "vectors" / "hendel").mkdir(parents=True)
    (run / "patching.json").write_text("{}")
    (run / "vectors" / "hendel" / "t.safetensors").write_bytes(b"x")
    with pytest.raises(TVLensError, match=r"is a folder, not a result file: .*\(patching.json\)"):
        PatchingRun.load(run)
    with pytest.raises(TVLensError, match="is a folder, not a vector file: .* t.safetensors"):
        TaskVector.load(run / "vectors")
    with pytest.raises(TVLensError, match="was not written by a result's save()"):
        PatchingRun.load(run / "patching.json")  # a file of the right name, not a result


def test_a_users_out_folder_is_refused_before_torch_is_imported(tmp_path):
    """The CLI answers a wrong --out before it imports torch or TransformerLens (seconds):
    ``-X importtime`` lists every module the refusing process imported."""
    import os
    import subprocess
    import sys
    import time

    user = _user_folder(tmp_path / "user", "patching.json")
    before = _hashes(user)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tvlens.cli", "patch", "--model",
         str(tmp_path), "--out", str(user)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    assert res.returncode == 2
    assert "holds patching.json but not tvlens's signature" in res.stderr
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if "|" in line}
    assert not {"torch", "transformer_lens", "transformers"} & imported, seconds
    assert _hashes(user) == before
