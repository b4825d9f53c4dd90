"""The comparison on the tiny preset: every method runs and is scored, parameter counts are
exact, unseen tasks never reach a trained method, the HF path scores like the bridge, a
stopped compare resumes without redoing finished cells, and bad input is one clear line."""

import csv
import json
import os
import platform

import pytest
from typer.testing import CliRunner

from tvlens.atv.compare import (
    METHODS,
    TRAINED,
    available_cores,
    cell_path,
    claim_cell,
    get_compare_preset,
    resolve_workers,
    run_compare,
)
from tvlens.atv.tuned import matched_rank, peft_parameter_count
from tvlens.errors import TVLensError
from tvlens.models import load_model


@pytest.fixture(scope="module")
def target_run(atv_target):
    """The synthetic setting's target (tests/atv/conftest.py): a tiny tvlens model that does
    first / last of symbol lists in context."""
    return atv_target


@pytest.fixture(scope="module")
def target(target_run):
    return load_model(target_run, device="cpu")


@pytest.fixture(scope="module")
def full(target, tmp_path_factory):
    """Every method, 2 seeds, on the tiny preset."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    return run_compare(target, out, preset="tiny", seeds=2, progress=False)


def test_every_method_scored_with_outputs(full):
    s, out = full.summary, full.out
    assert list(s) == list(METHODS)
    assert "context" in s["icl_16"]["skipped"]  # 16-shot prompts exceed n_ctx=64
    for m, r in s.items():
        if "skipped" in r:
            continue
        assert len(r["seeds"]) == (1 if m == "zero_shot" else 2)
        for g in ("in_domain", "unseen"):
            assert 0.0 <= r[f"{g}_first_token_mean"] <= 1.0
            assert r[f"{g}_exact_match_mean"] <= r[f"{g}_first_token_mean"] + 1e-9
        assert set(r["in_domain_tasks"]) == {"last_of_2", "first_of_3", "last_of_4"}
        assert set(r["unseen_tasks"]) == {"first_of_2", "last_of_3"}
    assert s["zero_shot"]["infer_relative_to_zero_shot"] == pytest.approx(1.0)
    assert s["icl_5"]["prompt_tokens_per_query"] > 4 * s["zero_shot"]["prompt_tokens_per_query"]
    # trained methods learn the in-domain tasks (the query alone tells the task)
    assert s["lora_qv"]["in_domain_first_token_mean"] > s["zero_shot"]["in_domain_first_token_mean"]
    data = json.loads((out / "comparison.json").read_text())
    assert data["complete"] and data["split"]["in_domain"] and data["split"]["unseen"]
    assert data["split"]["queries_per_task"]["in_domain"] == {"train": 24, "dev": 8, "test": 16}
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["method"] for r in rows] == list(METHODS)
    assert "unseen:first_of_2" in rows[0] and "in_domain:last_of_2" in rows[0]
    for f in ("bars.html", "heatmap.html", "config.json"):
        assert (out / f).is_file()


def test_parameter_counts(full, target):
    s, cfg = full.summary, full.config
    for kind in ("lora_qv", "lora_all", "lora_r1", "prefix"):  # trained model == meta count
        assert s[kind]["trainable_params"] == peft_parameter_count(target, kind, cfg)
    L, d = target.n_layers, target.d_model
    assert s["static_atv"]["trainable_params"] == L * d
    # prefix tuning: n_virtual * 2 (keys, values) * layers * d_model (GPT-2: no GQA)
    assert s["prefix"]["trainable_params"] == cfg.prefix_tokens * 2 * L * d
    d_gen = target.d_model  # the generator is a copy of the target
    for atv, ref in (("atv_lora_budget", "lora_qv"), ("atv_prefix_budget", "prefix")):
        r = s[atv]["info"]["rank"]
        assert r == matched_rank(s[ref]["trainable_params"], d_gen, L * d)
        assert s[atv]["trainable_params"] == r * (d_gen + L * d) + L * d
        assert abs(s[atv]["trainable_params"] - s[ref]["trainable_params"]) <= d_gen + L * d
    assert s["atv"]["trainable_params"] > s["atv_lora_budget"]["trainable_params"]


def test_unseen_tasks_never_trained_and_hf_matches_bridge(full):
    out = full.out
    for m in TRAINED:
        cell = json.loads(cell_path(out, m, 0).read_text())
        assert cell["info"]["trained_on_tasks"] == ["first_of_3", "last_of_2", "last_of_4"]
    zs = json.loads(cell_path(out, "zero_shot", 0).read_text())
    assert zs["info"]["hf_agrees_with_bridge"] == 1.0


def test_resume_without_redoing(full, target):
    out = full.out
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    again = run_compare(target, out, preset="tiny", seeds=2, progress=False)
    assert again.ran == []
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == before
    # a lost cell is the only one recomputed; a third seed adds only its own cells
    lost = json.loads(cell_path(out, "static_atv", 1).read_text())
    os.remove(cell_path(out, "static_atv", 1))
    methods = ["zero_shot", "static_atv", "lora_r1"]
    res = run_compare(target, out, preset="tiny", seeds=3, methods=methods, progress=False)
    assert res.ran == [("static_atv", 1), ("static_atv", 2), ("lora_r1", 2)]
    redone = json.loads(cell_path(out, "static_atv", 1).read_text())
    assert redone["groups"] == lost["groups"]  # seeded: the same numbers
    assert list(res.summary) == methods and len(res.summary["static_atv"]["seeds"]) == 3


def test_stopped_compare_resumes(target, tmp_path):
    methods = ["zero_shot", "static_atv"]
    first = run_compare(target, tmp_path, preset="tiny", seeds=2, methods=methods,
                        progress=False, stop_after=2)  # fmt: skip
    assert first.ran == [("zero_shot", 0), ("static_atv", 0)]
    assert json.loads((tmp_path / "comparison.json").read_text())["missing_cells"] == [
        ["static_atv", 1]
    ]
    rest = run_compare(target, tmp_path, preset="tiny", seeds=2, methods=methods, progress=False)
    assert rest.ran == [("static_atv", 1)]
    with pytest.raises(TVLensError, match="another configuration") as e:
        run_compare(target, tmp_path, preset="tiny", seeds=2, epochs=3, progress=False)
    assert "\n" not in str(e.value)


def test_two_processes_share_the_cells(full, target_run, tmp_path):
    """workers=2: a spawned process and this one compute the cells between them, each once,
    leave no claim behind, and get the one-process numbers (up to float summation order)."""
    methods = ["zero_shot", "icl_5", "lora_qv"]
    out = tmp_path / "w"
    res = run_compare(str(target_run), out, preset="tiny", seeds=2, methods=methods,
                      device="cpu", progress=False, workers=2)  # fmt: skip
    want = [("zero_shot", 0), ("icl_5", 0), ("icl_5", 1), ("lora_qv", 0), ("lora_qv", 1)]
    assert sorted(res.ran) == sorted(want)
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(
        f"{m}__seed{s}.json" for m, s in want
    )
    config = json.loads((out / "config.json").read_text())
    assert config["workers"] == 2 and config["torch_threads"] == max(1, available_cores() // 2)
    for m in methods:
        for g in ("in_domain", "unseen"):
            one = full.summary[m][f"{g}_first_token_mean"]
            assert res.summary[m][f"{g}_first_token_mean"] == pytest.approx(one, abs=0.05)


def test_claimed_cells_are_left_to_their_process(target, tmp_path):
    """A cell claimed by a live process is skipped (the compare stays incomplete); a claim
    whose process is gone is taken over."""
    methods = ["zero_shot", "icl_5"]
    path = cell_path(tmp_path, "icl_5", 0)
    assert claim_cell(path) and not claim_cell(path)  # held by this (live) process
    res = run_compare(target, tmp_path, preset="tiny", seeds=1, methods=methods, progress=False)
    assert res.ran == [("zero_shot", 0)] and not path.is_file()
    path.with_suffix(".claim").write_text(f"{platform.node()} 999999999")  # no such process
    res = run_compare(target, tmp_path, preset="tiny", seeds=1, methods=methods, progress=False)
    assert res.ran == [("icl_5", 0)] and not path.with_suffix(".claim").exists()


def test_workers_input(target):
    assert resolve_workers("auto", "cuda") == 1 and resolve_workers("auto", "cpu", True) == 1
    assert resolve_workers("auto", "cpu") == min(4, available_cores())
    for bad in ("x", 0, "-1"):
        with pytest.raises(TVLensError, match="positive integer"):
            resolve_workers(bad, "cpu")
    with pytest.raises(TVLensError, match="by name or folder"):
        run_compare(target, "unused", preset="tiny", workers=2, progress=False)


def test_bad_input_is_one_line(target, tmp_path):
    with pytest.raises(TVLensError, match="--data") as e:
        run_compare(target, tmp_path, preset="tiny", unseen=["fv/antonym"], progress=False)
    assert "\n" not in str(e.value)
    mine = tmp_path / "mine"  # a folder of the user's: refused, nothing in it changed
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(TVLensError, match="not empty") as e:
        run_compare(target, mine, preset="tiny", progress=False)
    assert "\n" not in str(e.value) and [p.name for p in mine.iterdir()] == ["notes.txt"]
    with pytest.raises(TVLensError, match="Unknown method"):
        get_compare_preset("tiny").with_overrides(methods=["nope"])
    with pytest.raises(TVLensError, match="both in-domain and unseen"):
        get_compare_preset("tiny").with_overrides(unseen=["al/last_of_2"])


def test_cli(target_run, tmp_path):
    from tvlens.cli.atv import app

    out = tmp_path / "c"
    args = ["compare", "--target", str(target_run), "--out", str(out), "--preset", "tiny",
            "--seeds", "1", "--workers", "1", "--methods", "zero_shot,icl_5",
            "--device", "cpu"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "icl_5" in res.output and (out / "comparison.csv").is_file()
    bad = CliRunner().invoke(app, [*args[:-4], "--methods", "nope", "--device", "cpu"])
    assert bad.exit_code == 2 and "Unknown method" in bad.output
    bad = CliRunner().invoke(app, [*args, "--workers", "two"])
    assert bad.exit_code == 2 and "positive integer" in bad.output


def test_notebook_runs(tmp_path, run_notebook):
    run_notebook("06_atv_compare.ipynb", tmp_path)
