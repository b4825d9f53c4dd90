"""The distillation test of the equal-rank claim (issue 32) on the tiny preset: the KL is the
textbook KL taken over every answer token, a student identical to its teacher has none, the
students stop when the KL stops falling and keep their lowest-KL weights, the four directions
(two same-family floors) are measured on training and held-out queries, and a run resumes by
its (rank, seed) cells."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tvlens.compare.distill as D
from tvlens.compare.distill import (
    DistillReport,
    DistillResult,
    distill_metrics,
    fresh_student,
    kl,
    kl_stopped,
    last_fall,
    run_distill,
)
from tvlens.compare.fitting import hf_logits, trainable_state
from tvlens.compare.run import compare_context, get_compare_preset
from tvlens.errors import TVLensError
from tvlens.models import load_model
from tvlens.tasks.core import Example


def test_kl_is_the_textbook_kl():
    p = torch.log_softmax(torch.randn(3, 11), -1)
    q = torch.log_softmax(torch.randn(3, 11), -1)
    want = torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(kl(p, q), want)
    assert torch.allclose(kl(p, p), torch.zeros(3), atol=1e-6) and (kl(p, q) > 0).all()


def test_the_students_stop_when_the_kl_stops_falling():
    """Scripted KL curves: a fall counts when it is more than rel_tol below the KL of the last
    fall (slow steady falls add up; noise below the tolerance does not)."""
    assert last_fall([1.0, 0.5, 0.25]) == 2 and not kl_stopped([1.0, 0.5, 0.25], patience=1)
    assert last_fall([1.0, 0.5, 0.499, 0.4985], rel_tol=0.01) == 1  # within 1%: not falling
    assert kl_stopped([1.0, 0.5, 0.499, 0.4985], patience=2, rel_tol=0.01)
    assert not kl_stopped([1.0, 0.5, 0.499], patience=2, rel_tol=0.01)
    assert last_fall([1.0, 0.995, 0.991, 0.989], rel_tol=0.01) == 3  # 1.1% below epoch 0
    assert kl_stopped([1.0, 0.5, 0.7, 0.6], patience=2)  # rising again: stop
    assert last_fall([1.0, 0.5, 0.499], rel_tol=0.0) == 2  # any fall counts at 0
    assert not kl_stopped([1.0], patience=1)


def test_bad_arguments_are_refused_before_loading(monkeypatch):
    import tvlens.compare.registry as R

    monkeypatch.setattr(R, "REGISTRY", dict(R.REGISTRY))
    assert R.rank_pair(4) == ("lora_r4", "atv_r4")
    assert R.get_method_spec("lora_r4").kwargs == {"kind": "lora_sites", "rank": 4}
    assert R.get_method_spec("atv_r4").kwargs == {"kind": "rank", "rank": 4}
    assert R.get_method_spec("lora_r1") == R.rank_pair_specs(1)[1]

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(D, "as_model", no_model)
    bad = [({"rank": 0}, "rank"), ({"ranks": (1, -1)}, "rank"), ({"ranks": ()}, "No rank"),
           ({"seeds": 0}, "seeds"), ({"rel_tol": 1.5}, "rel_tol"),
           ({"student_epochs": 0}, "student_epochs"),
           ({"rank": 2, "ranks": (4,)}, "not both"), ({"lora_lr": 0.0}, "lora_lr"),
           ({"atv_lr": -1e-3}, "atv_lr"), ({"atv_scale": -0.5}, "atv_scale")]  # fmt: skip
    for kwargs, says in bad:
        with pytest.raises(TVLensError, match=says):
            run_distill("/no/such/model", **kwargs)


def test_the_cli_flags_reproduce_the_committed_run(tmp_path, monkeypatch):
    """``tvlens atv distill`` with the flags the results page gives computes the committed
    run's cells' configuration: its cells are reused, none recomputed (the script's overrides
    and the flags are one configuration)."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from tvlens.cli import app
    from tvlens.runs.portable import portable

    committed = Path(__file__).parents[2] / "figures" / "atv_compare" / "distill_cpu"
    settings = json.loads((committed / "distill" / "r1_seed0.json").read_text())["settings"]
    tasks = "fv/country-capital,fv/english-french,fv/antonym,fv/present-past," \
            "fv/choose_first_of_3,fv/sentiment"  # fmt: skip
    cfg = D.distill_config("smollm2-135m", "cpu", lora_lr=3e-3, atv_lr=5e-3, atv_scale=1e-2,
                           in_domain=tasks.split(","), epochs=6)  # fmt: skip
    assert json.loads(json.dumps(portable(cfg.fingerprint()))) == settings["config"]
    # the CLI reaches run_distill with the same arguments
    seen = {}
    monkeypatch.setattr(D, "run_distill", lambda target, **kw: seen.update(kw, target=target))
    args = ["atv", "distill", "--target", "smollm2-135m", "--out", str(tmp_path), "--ranks",
            "1,8", "--seeds", "1", "--student-epochs", "6", "--in-domain", tasks, "--epochs",
            "6", "--lora-lr", "3e-3", "--atv-lr", "5e-3", "--atv-scale", "1e-2"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    kw = {k: seen[k] for k in ("lora_lr", "atv_lr", "atv_scale", "epochs", "in_domain")}
    preset = seen["preset"]
    seen_cfg = D.distill_config(seen["target"], preset, **kw)
    assert seen_cfg.fingerprint() == cfg.fingerprint()
    assert seen["student_epochs"] == 6 and list(seen["ranks"]) == [1, 8]


# ---------------------------------------------------------------------------- KL by hand


@pytest.fixture(scope="module")
def ctx(atv_target, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill_ctx")
    return compare_context(get_compare_preset("tiny"), load_model(atv_target, device="cpu"), out)


def _perturbed(ctx, name, seed):
    """A fresh method whose trainable weights are random (not the target's)."""
    method, module, _ = fresh_student(ctx, name, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return method, module


def _long_answers(ctx, n=6):
    """Training queries whose answer is several tokens (the answer, then the input)."""
    return [replace(p, query=Example(p.query.input, f"{p.query.output} {p.query.input}"))
            for p in ctx.data.in_domain.train[:n]]  # fmt: skip


@pytest.mark.parametrize("name", ["lora_r1", "atv_r1"])
def test_a_student_identical_to_its_teacher_has_no_kl_on_any_answer_token(ctx, name):
    teacher, t_module = _perturbed(ctx, name, 0)
    student, s_module, _ = fresh_student(ctx, name, 5)
    batch_of = fresh_student(ctx, "atv_r1", 0)[0].atv.batch
    prompts = _long_answers(ctx)
    differs = distill_metrics(teacher, student, prompts, batch_of)
    assert differs["kl"] > 1e-3 and differs["tokens"] > len(prompts)  # several per answer
    state = trainable_state(t_module)
    with torch.no_grad():
        for n, p in s_module.named_parameters():
            if p.requires_grad:
                p.copy_(state[n])
    same = distill_metrics(teacher, student, prompts, batch_of)
    assert same["kl"] == pytest.approx(0, abs=1e-5) and same["agreement"] == 1.0
    assert same["kl_first"] == pytest.approx(0, abs=1e-5) and same["agreement_first"] == 1.0
    assert distill_metrics(teacher, ctx.target, prompts, batch_of)["kl"] > 1e-3


def test_the_kl_over_answer_tokens_is_the_one_computed_from_both_models_logits(ctx):
    """A LoRA teacher and an ATV student: every answer token's KL and argmax from their full
    logits, position by position, against :func:`distill_metrics`."""
    teacher, _ = _perturbed(ctx, "lora_r1", 0)
    student, _ = _perturbed(ctx, "atv_r1", 1)
    batch_of = student.atv.batch
    prompts = _long_answers(ctx)
    got = distill_metrics(teacher, student, prompts, batch_of)
    b = batch_of(prompts)
    with torch.no_grad():
        t_logits = hf_logits(teacher.model, b.tokens, b.attention_mask).float()
        s_logits = student.atv.logits(b).float()
    kls, agree, first = [], [], []
    for i in range(len(prompts)):
        for j in range(1, b.tokens.shape[1]):
            if b.labels[i, j] == -100:
                continue
            t, s = F.log_softmax(t_logits[i, j - 1], -1), F.log_softmax(s_logits[i, j - 1], -1)
            kls.append(float(F.kl_div(s, t, log_target=True, reduction="sum")))
            agree.append(float(t.argmax() == s.argmax()))
            if j - 1 == b.query_pos[i]:
                first.append(kls[-1])
    assert got["tokens"] == len(kls) == sum(len(p.query.output.split()) for p in prompts)
    assert got["kl"] == pytest.approx(np.mean(kls), rel=1e-4)
    assert got["agreement"] == pytest.approx(np.mean(agree))
    assert len(first) == len(prompts) and got["kl_first"] == pytest.approx(np.mean(first), rel=1e-4)


# ---------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def distilled(atv_target, tmp_path_factory):
    """``run_distill`` (what ``tvlens atv distill`` runs) on the tiny preset, one rank and
    one seed, shortened."""
    out = tmp_path_factory.mktemp("distill")
    kw = {"target": str(atv_target), "out": out, "preset": "tiny", "device": "cpu",
          "ranks": (1,), "seeds": 1, "epochs": 2, "patience": 1, "student_epochs": 3}  # fmt: skip
    return run_distill(**kw), out, kw


def test_four_directions_measured_on_training_and_held_out_queries(distilled):
    res, out, _ = distilled
    (cell,) = res.cells
    assert set(cell.directions) == {"lora->atv", "atv->lora", "lora->lora", "atv->atv"}
    for name, d in cell.directions.items():
        assert set(d["sets"]) == {"train", "in_domain", "unseen"}
        for v in d["sets"].values():
            assert v["teacher_to_target"] > 0 and v["tokens"] > 0
            assert 0 <= v["agreement"] <= 1 and 0 <= v["agreement_before"] <= 1
        train = d["sets"]["train"]
        assert train["kl"] < train["kl_before"], name  # it learned its teacher
        if name.endswith("->lora"):  # a fresh LoRA (B = 0) is the target: before = the scale
            for v in d["sets"].values():
                assert v["kl_before"] == pytest.approx(v["teacher_to_target"], rel=1e-3, abs=1e-6)
        # the weights kept are the lowest-KL epoch's: measured again, the same KL
        kls = [e["train_kl"] for e in d["curve"]]
        assert train["kl"] == pytest.approx(min(kls), rel=1e-4)
        assert 1 <= d["epochs_run"] == len(kls) <= 3 and d["student_seed"] == 1000
    for fam in ("lora", "atv"):
        acc = cell.teachers[fam]["accuracy"]
        assert set(acc) == {"in_domain", "unseen"}
        assert all(0 <= a["exact_match"] <= a["first_token"] <= 1 for a in acc.values())
    assert "fallen by more than 1%" in res.stopping and "Stopping rule" in res.table


def test_the_outputs_are_written_and_load_back(distilled):
    res, out, _ = distilled
    cell = DistillResult.load(out / "distill" / "r1_seed0.json")
    assert cell.directions == res.cells[0].directions and cell.teachers == res.cells[0].teachers
    back = DistillReport.load(out / "distill.json")
    assert back.summary == res.summary and back.table == (out / "distill.md").read_text()
    df = res.to_dataframe()
    assert len(df) == 4 * 3 and {"kl", "kl_min", "kl_max", "agreement"} <= set(df.columns)
    assert set(cell.to_dataframe()["set"]) == {"train", "in_domain", "unseen"}
    assert res.plot() is not None and cell.plot() is not None
    assert res.table.count("- rank 1,") == 2  # one reading per teacher


def _forbid_computing(monkeypatch, why: str) -> None:
    """Loading the model or computing a cell fails the test with ``why``."""

    def no_work(*args, **kwargs):
        raise AssertionError(why)

    monkeypatch.setattr(D, "as_model", no_work)
    monkeypatch.setattr(D, "distill_pair", no_work)


def test_a_finished_run_resumes_by_cells_and_refuses_other_settings(distilled, monkeypatch):
    res, out, kw = distilled
    _forbid_computing(monkeypatch, "a finished cell was computed again")
    again = run_distill(**kw)
    assert again.ran == [] and again.summary == res.summary and res.ran == ["r1_seed0"]
    with pytest.raises(TVLensError, match="another configuration"):
        run_distill(**{**kw, "rel_tol": 0.05})


def test_stop_after_summarises_the_cells_done_and_lists_the_others(distilled, monkeypatch):
    res, out, kw = distilled
    _forbid_computing(monkeypatch, "stop_after=0 computed a cell")
    part = run_distill(**{**kw, "seeds": 2}, stop_after=0)
    assert part.ran == [] and part.missing == ["r1_seed1"]
    assert part.summary == res.summary  # the done seed alone
    assert "Not computed yet (resume with the same command): r1_seed1." in part.table
    assert DistillReport.load(out / "distill.json").missing == ["r1_seed1"]
    with pytest.raises(TVLensError, match="stop_after"):
        run_distill(**kw, stop_after=-1)
    # one seed alone: its cell only (here not computed), the others untouched
    one = run_distill(**{**kw, "seeds": 2}, seed=1, stop_after=0)
    assert one.seeds == [1] and one.missing == ["r1_seed1"] and one.cells == []
    with pytest.raises(TVLensError, match="seed must be"):
        run_distill(**kw, seed=-1)
    run_distill(**kw)  # the folder's summary back to the finished run's


def test_the_reading_does_not_call_a_budget_limit_inexpressible(distilled):
    import copy

    (base,) = distilled[0].cells

    def cell(cross_kl, floor_kl, falling):
        dirs = copy.deepcopy(base.directions)
        for name, d in dirs.items():
            d["sets"]["train"]["kl"] = cross_kl if name == "lora->atv" else floor_kl
            d["still_falling"] = falling and name == "lora->atv"
        return replace(base, directions=dirs)

    assert "close to the floor" in D.reading([cell(0.1, 0.2, False)], 1, "lora")
    falling = D.reading([cell(1.0, 0.1, True)], 1, "lora")
    assert "within this budget (an upper bound)" in falling and "at this rank" not in falling
    assert "not expressed at this rank" in D.reading([cell(1.0, 0.1, False)], 1, "lora")


def test_a_killed_cell_resumes_from_its_finished_teachers_and_students(
    distilled, tmp_path, monkeypatch
):
    """The cell's JSON is written at its end; a cell killed after some of its six runs
    loads its finished teachers (weights) and students (records) instead of training them
    again, and gives the same result."""
    import shutil

    import tvlens.compare.fitting as fitting

    res, out, kw = distilled
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "distill" / "r1_seed0.json").unlink()  # killed before the cell was written

    def no_training(*args, **kwargs):
        raise AssertionError("a finished teacher or student was trained again")

    monkeypatch.setattr(fitting, "engine_fit", no_training)
    monkeypatch.setattr(D, "engine_fit", no_training)
    again = run_distill(**{**kw, "out": copy})
    assert again.ran == ["r1_seed0"] and again.summary == res.summary
    assert again.cells[0].teachers == res.cells[0].teachers
    # another students' setting: the teachers (same settings) are loaded, the students'
    # records do not match, so a student trains
    other = tmp_path / "other"
    shutil.copytree(out, other)
    (other / "distill" / "r1_seed0.json").unlink()

    def student_trains(*args, **kwargs):
        raise AssertionError("a student trains")

    monkeypatch.setattr(D, "engine_fit", student_trains)
    with pytest.raises(AssertionError, match="a student trains"):
        run_distill(**{**kw, "out": other, "rel_tol": 0.2})
