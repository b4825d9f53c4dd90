"""ATV training on the engine, on the synthetic setting (a tvlens-trained list model as target,
tasks told apart by the query's length): the `tiny` preset from the CLI beats zero-shot on
held-out queries by far more than 0.2; a stopped run resumes to the same weights; two
processes give the same loss curve as one; the run folder has what other runs have."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tvlens.atv.model import ATV
from tvlens.atv.train import train_atv
from tvlens.cli import app
from tvlens.errors import TVLensError

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"epochs": 2, "n_train": 12, "n_dev": 4, "n_test": 4, "batch_size": 4}


@pytest.fixture(scope="module")
def cli_run(atv_target, tmp_path_factory):
    """`tvlens atv train --preset tiny` then `tvlens atv eval` (its JSON output)."""
    out = tmp_path_factory.mktemp("atv-cli") / "run"
    runner = CliRunner()
    r = runner.invoke(
        app, ["atv", "train", "--target", str(atv_target), "--out", str(out), "--preset",
              "tiny", "--device", "cpu"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["atv", "eval", "--run", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return out, json.loads(r.output)


def test_tiny_preset_beats_zero_shot_on_held_out_queries(cli_run):
    out, res = cli_run
    assert res["split"] == "test" and res["queries"] == 150
    zs, atv = res["methods"]["zero-shot"], res["methods"]["atv"]
    assert res["atv_minus_zero_shot"] >= 0.2, res
    assert atv["mean_first_token"] >= 0.9 and zs["mean_first_token"] <= 0.7
    for task, acc in atv["tasks"].items():  # every task, not only on average
        assert acc["first_token"] > zs["tasks"][task]["first_token"]
    assert zs["trainable_parameters"] == 0 and atv["trainable_parameters"] > 0
    from tvlens.runs.portable import portable

    saved = json.loads((out / "eval.json").read_text())
    # the result's save() (issue 29), paths written portable
    assert saved.pop("tvlens_result") and saved == portable(res)
    from tvlens.compare.evaluate import ATVEvaluation

    assert dict(ATVEvaluation.load(out / "eval.json")) == res


def test_run_folder_like_other_runs(cli_run):
    out, _ = cli_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "atv" and cfg["preset"] == "tiny" and cfg["config"]["scale"] == 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [c["epoch"] for c in metrics["checkpoints"]] == [1, 2, 3]
    assert all("mean_dev_accuracy" in c for c in metrics["checkpoints"])
    assert metrics["train_loss"][-1][1] < metrics["train_loss"][0][1]
    spec = ATV.read_spec(out / "atv.safetensors")
    assert spec.target["name"] == cfg["config"]["target"] or spec.target["revision"]


def test_resume_equals_uninterrupted(atv_target, tmp_path):
    kw = dict(preset="tiny", device="cpu", progress=False, target=str(atv_target), **SMALL)
    assert train_atv(tmp_path / "full", **kw).completed
    # 36 queries in batches of 4: 9 steps per epoch; stop in epoch 2, after its checkpoint 9.
    part = train_atv(tmp_path / "part", stop_after=12, **kw)
    assert not part.completed and [c["step"] for c in part.metrics["checkpoints"]] == [9]
    with pytest.raises(TVLensError, match="already holds"):
        train_atv(tmp_path / "part", **kw)
    resumed = train_atv(tmp_path / "part", resume=True, **kw)
    assert resumed.completed
    a = load_file(str(tmp_path / "full" / "atv.safetensors"))
    b = load_file(str(tmp_path / "part" / "atv.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fm = json.loads((tmp_path / "full" / "metrics.json").read_text())
    pm = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert fm["train_loss"] == pm["train_loss"]


@pytest.mark.slow  # about a minute here (two processes start and load their models)
def test_two_processes_same_loss_curve_as_one(atv_target, tmp_path):
    """`accelerate launch` with 2 CPU processes (data parallelism: each process takes one of
    every step's 2 micro-batches) against 1 process accumulating the same 2.

    ``--multi_gpu`` is accelerate's multi-process launcher (torchrun underneath); on a machine
    without a GPU its processes run on the CPU (gloo). ``accelerate launch --cpu`` starts a
    single process whatever ``--num_processes`` says (accelerate 1.15)."""
    common = ["atv", "train", "--target", str(atv_target), "--epochs", "1", "--n-train", "11",
              "--batch-size", "3", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    two = subprocess.run(
        [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29561",
         "-m", "tvlens.cli", *common, "--out", str(tmp_path / "two")],
        env={**env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    r = CliRunner().invoke(app, [*common, "--grad-accum", "2", "--out", str(tmp_path / "one")])
    assert r.exit_code == 0, r.output
    one_m = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two_m = json.loads((tmp_path / "two" / "metrics.json").read_text())
    # 33 queries in micro-batches of 3: 6 steps of 2 micro-batches, the last of 1 (process 1
    # has no rows there and joins the gradient all-reduce with a zero-weighted batch).
    assert len(one_m["train_loss"]) == len(two_m["train_loss"]) == 6
    for (s1, l1), (s2, l2) in zip(one_m["train_loss"], two_m["train_loss"], strict=True):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-4, abs=1e-5)
    a = load_file(str(tmp_path / "one" / "atv.safetensors"))
    b = load_file(str(tmp_path / "two" / "atv.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_mismatched_target_refused_by_eval(cli_run, tmp_path, make_tiny, letters_tokenizer):
    out, _ = cli_run
    other = make_tiny("atv-eval-other", "gpt2", letters_tokenizer).model
    with pytest.raises(TVLensError, match="was trained for target"):
        ATV.load(out, target=other)
    r = CliRunner().invoke(app, ["atv", "eval", "--run", str(tmp_path / "nothing")])
    assert r.exit_code != 0 and "not an ATV run" in r.output


def test_evaluate_run_gives_a_typed_result(cli_run):
    """``evaluate_run`` returns an ``ATVEvaluation``: the JSON the CLI printed, its table (a
    row per method and task) and its figure (bars per task, one colour per method)."""
    from tvlens.compare.evaluate import ATVEvaluation, evaluate_run

    out, printed = cli_run
    res = evaluate_run(out, device="cpu", write=False)
    assert isinstance(res, ATVEvaluation)
    assert res["atv_minus_zero_shot"] == printed["atv_minus_zero_shot"]
    for m in ("zero-shot", "atv"):  # the same scores (the timings differ)
        assert res["methods"][m]["tasks"] == printed["methods"][m]["tasks"]
    df = res.to_dataframe()
    atv = df[df["method"] == "atv"].set_index("task")["first_token"]
    assert atv.to_dict() == {
        t: a["first_token"] for t, a in printed["methods"]["atv"]["tasks"].items()
    }
    assert len(res.plot().data) == 2  # zero-shot and ATV
