"""Synthetic ICL training: checkpoints, metrics, emergence, atomic writes and resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tvlens.errors import CheckpointError, TVLensError
from tvlens.evaluation.icl import evaluate_icl
from tvlens.models import build_word_tokenizer, list_checkpoints, load_model
from tvlens.tasks import get_suite
from tvlens.training import checkpoint_steps, get_preset, train_synthetic
from tvlens.training.data import ICLBatcher
from tvlens.training.train import run_vocabulary


def test_checkpoint_steps_are_log_spaced_and_end_at_final():
    cfg = get_preset("default")
    steps = checkpoint_steps(cfg)
    assert steps[0] == cfg.first_checkpoint and steps[-1] == cfg.steps
    gaps = [b - a for a, b in zip(steps[:-1], steps[1:], strict=True)]
    assert gaps == sorted(gaps), "log spacing: gaps grow"
    assert len(steps) == len(set(steps))


def test_batches_depend_on_step_only_and_put_loss_on_answers():
    cfg = get_preset("tiny")
    suite = get_suite(**cfg.suite)
    tok = build_word_tokenizer(run_vocabulary(cfg, suite))
    b = ICLBatcher(suite, tok, cfg.k, cfg.template, n_ctx=cfg.n_ctx)
    x, y = b.batch(7, 8, seed=0), b.batch(7, 8, seed=0)
    assert torch.equal(x.input_ids, y.input_ids)
    assert not torch.equal(x.input_ids, b.batch(8, 8, seed=0).input_ids)
    # With gradient accumulation, micro-batch 0 is the step's batch; the others differ.
    assert torch.equal(x.input_ids, b.batch(7, 8, seed=0, micro=0).input_ids)
    z = b.batch(7, 8, seed=0, micro=1)
    assert torch.equal(z.input_ids, b.batch(7, 8, seed=0, micro=1).input_ids)
    assert not torch.equal(z.task_index, x.task_index) or not torch.equal(z.input_ids, x.input_ids)
    # Labels are the answer tokens (k demos + query = k+1 per prompt, one token each here).
    assert ((x.labels != -100).sum(1) == cfg.k + 1).all()
    arrow = tok.convert_tokens_to_ids("->")
    rows = torch.arange(8)[:, None]
    # Each answer follows an arrow token, and its label is the token itself.
    assert (x.input_ids[rows, x.answer_start - 1] == arrow).all()
    assert torch.equal(x.labels[rows, x.answer_start], x.input_ids[rows, x.answer_start])


@pytest.fixture(scope="module")
def emergent_run(tmp_path_factory):
    """The tiny preset, long enough to show ICL emerging (seconds on CPU)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    return train_synthetic(out, preset="tiny", device="cpu", progress=False)


def test_run_layout_and_metrics(emergent_run):
    run = emergent_run.run_dir
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preset"] == "tiny" and cfg["config"]["steps"] == emergent_run.config.steps
    metrics = json.loads((run / "metrics.json").read_text())
    steps = [c["step"] for c in metrics["checkpoints"]]
    assert steps == sorted(steps) == [c.step for c in list_checkpoints(run)]
    assert steps == checkpoint_steps(emergent_run.config)
    names = get_suite(**emergent_run.config.suite).names
    for c in metrics["checkpoints"]:
        assert set(c["icl_accuracy"]) == set(names)
        assert len(c["accuracy_by_demo"]) == emergent_run.config.k + 1
    # Only the newest checkpoint carries the optimizer state.
    states = [c.step for c in list_checkpoints(run) if (c.path / "training_state.pt").exists()]
    assert states == [steps[-1]]


def test_icl_emerges_in_metrics(emergent_run):
    ck = emergent_run.metrics["checkpoints"]
    first, last = ck[0], ck[-1]
    assert first["mean_icl_accuracy"] < 0.5
    assert last["mean_icl_accuracy"] >= 0.9
    assert last["loss"] < first["loss"]
    # In-context, not memorised: the first answer (no demonstrations before it) stays far
    # below the query, which has k demonstrations to infer the task from.
    by_demo = last["accuracy_by_demo"]
    assert by_demo[-1] - by_demo[0] > 0.3


def test_every_checkpoint_loads_and_final_evaluates_like_training_metrics(emergent_run):
    run = emergent_run.run_dir
    for c in list_checkpoints(run):
        m = load_model(run, revision=c.revision, device="cpu")
        assert m.spec.step == c.step and m.spec.source == "tvlens"
    m = load_model(run, device="cpu")
    suite = m.training_suite()
    assert suite.names == get_suite(**emergent_run.config.suite).names
    ev = evaluate_icl(m, suite, k=emergent_run.config.k, n_prompts=32, seed=3)
    assert ev.mean_first_token >= 0.85


def test_resume_reaches_identical_weights(tmp_path):
    steps = 40
    full = train_synthetic(
        tmp_path / "full", preset="tiny", steps=steps, device="cpu", progress=False
    )
    part_dir = tmp_path / "part"
    part = train_synthetic(
        part_dir, preset="tiny", steps=steps, device="cpu", progress=False, stop_after=23
    )
    assert not part.completed
    last = list_checkpoints(part_dir)[-1].step
    assert last < steps
    # A killed run can leave a half-written temporary checkpoint: it must not count or load.
    junk = part_dir / "checkpoints" / ".tmp-step-000000030-999"
    junk.mkdir()
    (junk / "config.json").write_text("{")
    with pytest.raises(TVLensError, match="already holds"):
        train_synthetic(part_dir, preset="tiny", steps=steps, device="cpu", progress=False)
    resumed = train_synthetic(
        part_dir, preset="tiny", steps=steps, device="cpu", progress=False, resume=True
    )
    assert resumed.completed and not junk.exists()
    a = load_file(str(full.final.path / "model.safetensors"))
    b = load_file(str(resumed.final.path / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert full.metrics["checkpoints"] == resumed.metrics["checkpoints"]


def test_resume_with_other_config_is_refused(tmp_path):
    train_synthetic(tmp_path / "r", preset="tiny", steps=12, device="cpu", progress=False)
    for resume in (True, False):
        with pytest.raises(TVLensError, match="different configuration .steps: 12 there, 20"):
            train_synthetic(
                tmp_path / "r", preset="tiny", steps=20, device="cpu", progress=False,
                resume=resume,
            )  # fmt: skip


def test_rerunning_a_finished_run_returns_it(tmp_path):
    """A notebook cell run twice: the second call trains nothing and returns the run."""
    kw = dict(preset="tiny", steps=12, device="cpu", progress=False)
    first = train_synthetic(tmp_path / "r", **kw)
    weights = (first.final.path / "model.safetensors").read_bytes()
    for resume in (False, True):
        again = train_synthetic(tmp_path / "r", resume=resume, **kw)
        assert again.completed and again.metrics == first.metrics
        assert [c.step for c in again.checkpoints] == [c.step for c in first.checkpoints]
        assert (again.final.path / "model.safetensors").read_bytes() == weights


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    res = train_synthetic(tmp_path / "r", preset="tiny", steps=12, device="cpu", progress=False)
    path = res.final.path
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(res.run_dir, device="cpu")
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_model(res.run_dir, device="cpu")
    shutil.rmtree(res.run_dir / "checkpoints")
    with pytest.raises(CheckpointError):
        load_model(res.run_dir, device="cpu")


def test_unknown_preset_and_option():
    with pytest.raises(TVLensError, match="Unknown preset"):
        get_preset("huge")
    with pytest.raises(TVLensError, match="Unknown training option"):
        get_preset("tiny").with_overrides(n_layer=3)
