"""The comparison on the tiny preset: every method runs and is scored on instructed prompts
(training and held-out instructions), swept methods are selected on dev and stop early, the
retrieval baseline equals the task vector when it retrieves the right task, the equal-rank pair
has its parameter counts, unseen tasks never reach a trained method and their input overlap is
stored, a stopped compare resumes without redoing finished cells, and bad input is one clear
line."""

import csv
import json
import os
import platform

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tvlens.atv.data import generator_text
from tvlens.compare.registry import get_method_spec, methods_where, variant_label
from tvlens.compare.report import UNRECORDED_DEVICE, cell_devices
from tvlens.compare.run import (
    METHODS,
    SELECTED,
    Cell,
    build_method,
    cell_path,
    compare_cells,
    compare_context,
    get_compare_preset,
    run_compare,
)
from tvlens.compare.tuned import peft_parameter_count
from tvlens.compare.workers import (
    available_cores,
    claim_cell,
    device_name,
    resolve_workers,
    watch_parent,
)
from tvlens.errors import TVLensError
from tvlens.models import load_model

IN_DOMAIN, UNSEEN = ["first", "last"], ["first_of_2", "last_of_2"]


def _cell(out, method, seed=0, variant=SELECTED):
    return json.loads(cell_path(out, Cell(method, variant, seed)).read_text())


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
    s, out, cfg = full.summary, full.out, full.config
    assert [m for m in s if not m.startswith("_")] == list(METHODS)
    assert "context" in s["icl_16"]["skipped"]  # 16-shot prompts exceed n_ctx=64
    for m, r in s.items():
        if m.startswith("_") or "skipped" in r:
            continue
        spec = get_method_spec(m)
        want = 1 if spec.seedless or spec.max_seeds == 1 else 2
        assert len(r["seeds"]) == want, m
        for g in ("in_domain", "unseen"):
            assert 0.0 <= r[f"{g}_first_token_mean"] <= 1.0
            assert r[f"{g}_exact_match_mean"] <= r[f"{g}_first_token_mean"] + 1e-9
            lo, hi = r[f"{g}_ci"]
            assert 0.0 <= lo <= hi <= 1.0
            # held-out instructions are scored for instructed methods only
            assert (f"{g}_heldout_first_token_mean" in r) == spec.instructed
        assert set(r["in_domain_tasks"]) == set(IN_DOMAIN)
        assert set(r["unseen_tasks"]) == set(UNSEEN)
        assert set(r["categories"]) == {"in_domain:list", "unseen:list"}
        if spec.trained:
            assert r["final_train_loss"] > 0 and r["selected"]["label"]
    assert s["zero_shot"]["infer_relative_to_zero_shot"] == pytest.approx(1.0)
    assert s["icl_5"]["prompt_tokens_per_query"] > 3 * s["zero_shot"]["prompt_tokens_per_query"]
    data = json.loads((out / "comparison.json").read_text())
    assert data["complete"] and data["split"]["instructed"]
    assert data["split"]["queries_per_task"]["in_domain"] == {"train": 24, "dev": 8, "test": 16}
    assert [v["verdict"] in ("reproduced", "not reproduced", "inconclusive")
            for v in data["verdicts"]] == [True] * 3  # fmt: skip
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["method"] for r in rows] == list(METHODS)
    assert "unseen:first_of_2" in rows[1] and "in_domain:last" in rows[1]
    outputs = (
        "bars.html",
        "heatmap.html",
        "curves.html",
        "curves.md",
        "overlap.html",
        "overlap.csv",
        "table.md",
        "categories.md",
        "verdicts.md",
        "config.json",
    )
    for f in outputs:
        assert (out / f).is_file(), f
    assert "oracle label" in (out / "table.md").read_text()
    assert len(cfg.methods) == len(METHODS)


def test_prompts_carry_their_task_instruction(target, tmp_path):
    """Every method reads the same instructed prompt: a training instruction drawn per query
    (redrawn per epoch in training), the held-out one only at test, none in the ablation; the
    ATV generator reads the instruction too."""
    cfg = get_compare_preset("tiny")
    data = compare_context(cfg, target, tmp_path).data
    instr = {t: [x.instruction for x in ts] for t, ts in data.templates.items()}
    for p in data.in_domain.train + data.in_domain.test + data.unseen.test:
        assert p.template.instruction in instr[p.task]
        assert p.text.startswith(p.template.instruction + "\n")
        assert p.template.instruction in generator_text(p)
    held = data.heldout(data.in_domain.test)
    assert all(p.template.instruction == data.heldout_templates[p.task].instruction
               and p.template.instruction not in instr[p.task] for p in held)  # fmt: skip
    assert all(p.template.instruction == "" for p in data.bare().in_domain.test)
    # the in-domain tasks take the same lists: only the instruction tells them apart
    assert data.overlap["first"]["last"] > 0.9
    drawn = {data.train_template(data.in_domain.train[0], 0, e).template.name for e in range(12)}
    assert len(drawn) > 1  # redrawn across epochs


def test_sweep_selects_on_dev_and_stops_early(full):
    out, cfg = full.out, full.config
    for m in methods_where(trained=True):
        spec = get_method_spec(m)
        variants = spec.variants(cfg)
        reported = _cell(out, m)
        if spec.inherits is not None:  # takes the other method's choice, trains again
            assert reported["variant_values"] == _cell(out, spec.inherits)["variant_values"]
            assert "reused" not in reported["info"]
            continue
        assert len(variants) >= 2
        sweeps = {variant_label(v): _cell(out, m, 0, variant_label(v)) for v in variants}
        dev = {k: c["info"]["best_dev_acc"] for k, c in sweeps.items()}
        best = max(dev, key=lambda k: (dev[k], -list(dev).index(k)))
        assert reported["info"]["selection"]["label"] == best
        assert reported["info"]["reused"] == f"sweep cell {best}"  # seed 0: the sweep's weights
        assert "reused" not in _cell(out, m, 1)["info"]
        for c in sweeps.values():
            info = c["info"]
            accs = [e["dev_acc"] for e in info["curve"]]
            assert info["best_dev_acc"] == max(accs) and 1 <= len(accs) <= cfg.epochs
            assert info["stopped_early"] == (len(accs) < cfg.epochs)
            if info["stopped_early"]:  # `patience` epochs after the best, none better
                assert len(accs) - 1 - int(np.argmax(accs)) == cfg.patience
            assert "groups" not in c  # a sweep cell is scored on dev only
    atv = _cell(out, "atv")["info"]
    assert len(atv["extra"]["steer_ratio"]) == 2 and min(atv["extra"]["steer_ratio"]) > 0
    labels = [variant_label(v) for v in get_method_spec("atv").variants(cfg)]
    assert {lb.split("scale=")[1] for lb in labels} == {"0.3", "1"}  # λ is swept too


@pytest.mark.slow  # over 20 s on 2 cores: `pytest -m slow`
def test_a_shorter_sweep_then_the_full_budget(target, tmp_path):
    """``sweep_epochs``: the sweep cells train at most that many epochs; seed 0 trains again
    with the full budget unless its sweep run had stopped on its own (patience)."""
    res = run_compare(target, tmp_path, preset="tiny", seeds=1, methods=["lora_r1"],
                      sweep_epochs=1, epochs=3, progress=False)  # fmt: skip
    cfg = res.config
    for v in get_method_spec("lora_r1").variants(cfg):
        info = _cell(tmp_path, "lora_r1", 0, variant_label(v))["info"]
        assert len(info["curve"]) == 1 and not info["stopped_early"]
    info = _cell(tmp_path, "lora_r1")["info"]
    assert "reused" not in info  # a 1-epoch sweep never stops on its own (patience 1)
    assert 2 <= len(info["curve"]) <= 3
    with pytest.raises(TVLensError, match=r"sweep_epochs must be >= 1, got 0"):
        get_compare_preset("tiny").with_overrides(sweep_epochs=0)
    # with the same budget for both, seed 0 is the sweep cell's run
    same = run_compare(target, tmp_path / "same", preset="tiny", seeds=1, methods=["lora_r1"],
                       sweep_epochs=3, epochs=3, progress=False)  # fmt: skip
    assert _cell(same.out, "lora_r1")["info"]["reused"].startswith("sweep cell")


def test_unseen_tasks_never_trained_and_overlap_stored(full):
    out = full.out
    for path in (out / "cells").glob("*.json"):
        cell = json.loads(path.read_text())
        spec = get_method_spec(cell["method"])
        if "skipped" in cell:
            continue
        if spec.trained or not spec.demonstrations:
            key = "trained_on_tasks" if spec.trained else "fitted_on_tasks"
            assert cell["info"][key] == IN_DOMAIN, path.name
    zs = _cell(out, "zero_shot")
    assert zs["info"]["hf_agrees_with_bridge"] == 1.0
    split = json.loads((out / "comparison.json").read_text())["split"]
    assert set(split["input_overlap"]) == set(IN_DOMAIN + UNSEEN)
    assert set(split["input_overlap"]["first_of_2"]) == set(IN_DOMAIN)
    rows = list(csv.DictReader((out / "overlap.csv").open()))
    assert [r["task"] for r in rows] == IN_DOMAIN + UNSEEN


def test_unseen_task_sharing_inputs_is_refused(target, tmp_path):
    cfg = get_compare_preset("tiny").with_overrides(unseen=["l34/first=first_of_2"])
    with pytest.raises(TVLensError, match="overlap_allowed") as e:
        compare_context(cfg, target, tmp_path)
    assert "\n" not in str(e.value)
    ok = cfg.with_overrides(overlap_allowed={"first_of_2|first": "same inputs, same task"})
    with pytest.raises(TVLensError, match="first_of_2.*last"):  # the other task still checked
        compare_context(ok, target, tmp_path)


def test_retrieval_with_the_right_task_is_the_task_vector(full, target, tmp_path):
    """The retrieval baseline injects exactly the task vector of the task it retrieves: made to
    retrieve the label, it scores each query as the (oracle-label) task vector does."""
    ctx = compare_context(full.config, target, tmp_path)
    ret = build_method(ctx, "retrieval", 0)
    info = ret.fit(ctx.data.in_domain)
    assert 0.0 <= info["dev_retrieval_accuracy"] <= 1.0
    tv_layers = _cell(full.out, "task_vector")["info"]["layers"]
    assert info["layers"] == {t: tv_layers[t] for t in IN_DOMAIN}  # the same dev choice
    keys = ret.vector_keys(ctx.data.unseen.test)
    assert set(keys) <= set(IN_DOMAIN)  # an unseen query gets an in-domain vector
    tv = build_method(ctx, "task_vector", 0)
    tv.fit(ctx.data.in_domain)
    ret.vector_keys = lambda ps: [p.task for p in ps]
    prompts = ctx.data.in_domain.test
    for a, b in zip(ret.correctness(prompts), tv.correctness(prompts), strict=True):
        assert a.tolist() == b.tolist()
    cell = _cell(full.out, "retrieval")["info"]
    assert set(cell["retrieved"]["unseen"]) == set(UNSEEN)


def test_parameter_counts_and_the_equal_rank_pair(full, target):
    s, cfg = full.summary, full.config
    for m in ("lora_qv", "lora_all", "prefix", "lora_r1", "lora_r8"):  # trained == meta count
        kw = get_method_spec(m).kwargs
        assert s[m]["trainable_params"] == peft_parameter_count(
            target, kw["kind"], cfg.peft, kw.get("rank")
        )
    L, d = target.n_layers, target.d_model
    assert s["prefix"]["trainable_params"] == cfg.peft.prefix_tokens * 2 * L * d
    d_gen, d_mlp = target.d_model, 128  # the generator is a copy of the target
    for r in (1, 8):
        # rank-r expansion of the frozen generator's state vs rank-r LoRA on each block's
        # MLP output projection (d_mlp -> d_model): the sites where ATV adds its vector
        assert s[f"atv_r{r}"]["trainable_params"] == r * (d_gen + L * d) + L * d
        assert s[f"lora_r{r}"]["trainable_params"] == L * r * (d_mlp + d)
        # the theorem's static affine ATV: LoRA's U, V on the same sites plus a bias
        assert s[f"atv_affine_r{r}"]["trainable_params"] == L * (r * (d + d_mlp) + d)
    assert s["atv"]["trainable_params"] > s["atv_lora_budget"]["trainable_params"]


def test_static_affine_atv_cell_and_its_weights_round_trip(target, tmp_path):
    """``atv_affine_r1`` (the theorem's form) runs as a cell, swept over LoRA's learning rates,
    with its parameter count; its best weights saved and restored score the same."""
    res = run_compare(target, tmp_path, preset="tiny", seeds=1, methods=["atv_affine_r1"],
                      progress=False)  # fmt: skip
    cfg, L, d = res.config, target.n_layers, target.d_model
    cell = _cell(tmp_path, "atv_affine_r1")
    assert cell["trainable_params"] == L * (1 * (d + 128) + d)
    assert cell["info"]["scaling"] == cfg.peft.lora_alpha_ratio
    assert cell["info"]["selection"]["label"] in {f"lr={lr:g}" for lr in cfg.peft.lrs}
    assert 0.0 <= cell["groups"]["in_domain"]["train"]["exact_match"] <= 1.0
    ctx = compare_context(cfg, target, tmp_path / "again")
    m = build_method(ctx, "atv_affine_r1", 0, {"lr": cfg.peft.lrs[-1]})
    m.run_dir = tmp_path / "again" / "run"
    m.fit(ctx.data.in_domain)
    assert m.atv.U.abs().sum() > 0  # it trained
    m.save_best(tmp_path / "best.safetensors")
    back = build_method(ctx, "atv_affine_r1", 0, {"lr": cfg.peft.lrs[-1]})
    back.restore(tmp_path / "best.safetensors")
    prompts = ctx.data.in_domain.test
    for a, b in zip(m.correctness(prompts), back.correctness(prompts), strict=True):
        assert a.tolist() == b.tolist()
    assert torch.equal(back.atv.U, m.atv.U) and torch.equal(back.atv.b, m.atv.b)


@pytest.mark.slow  # over 20 s on 2 cores: `pytest -m slow`
def test_resume_without_redoing(full, target):
    out = full.out
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    again = run_compare(target, out, preset="tiny", seeds=2, progress=False)
    assert again.ran == []
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == before
    # a lost cell is the only one recomputed; a third seed adds only its own cells
    lost = _cell(out, "lora_r1", 1)
    os.remove(cell_path(out, Cell("lora_r1", SELECTED, 1)))
    methods = ["zero_shot", "lora_r1"]
    res = run_compare(target, out, preset="tiny", seeds=3, methods=methods, progress=False)
    assert res.ran == [Cell("lora_r1", SELECTED, 1), Cell("lora_r1", SELECTED, 2)]
    assert _cell(out, "lora_r1", 1)["groups"] == lost["groups"]  # seeded: the same numbers
    assert list(res.summary) == ["zero_shot", "lora_r1", "_sweeps"]
    assert len(res.summary["lora_r1"]["seeds"]) == 3


def test_folder_saved_under_old_option_names_resumes(full, target):
    """A comparison saved with flat settings (before the method families' blocks, issue 30)
    and the old ``fv_top_heads`` (now ``top_k_heads``) resumes without recomputing a cell; the
    old keywords still work (the renamed one warned), and another value is refused."""
    from tvlens.compare.options import FLAT

    path = full.out / "config.json"
    saved = json.loads(path.read_text())
    fp = saved["fingerprint"]
    for old, (family, name) in FLAT.items():  # the flat form config.json had
        fp[old] = fp[family].pop(name)
    assert not any(fp.pop(family) for family in ("vector", "peft", "atv"))
    fp["fv_top_heads"] = fp.pop("top_k_heads")
    path.write_text(json.dumps(saved))
    with pytest.warns(DeprecationWarning, match="fv_top_heads= is renamed top_k_heads="):
        again = run_compare(target, full.out, preset="tiny", seeds=2, progress=False,
                            fv_top_heads=fp["fv_top_heads"], lora_rank=fp["lora_rank"])  # fmt: skip
    assert again.ran == []
    assert again.config.vector.top_k_heads == fp["fv_top_heads"]
    other = {"top_k_heads": fp["fv_top_heads"] + 1, "lora_rank": fp["lora_rank"] + 1,
             "atv_lrs": [*fp["atv_lrs"], 1.0]}  # fmt: skip
    for name, value in other.items():  # each block is part of the fingerprint
        with pytest.raises(TVLensError, match="another configuration"):
            run_compare(target, full.out, preset="tiny", seeds=2, progress=False,
                        **{name: value})  # fmt: skip


def test_stopped_compare_resumes(target, tmp_path):
    methods = ["zero_shot", "lora_r1"]
    first = run_compare(target, tmp_path, preset="tiny", seeds=2, methods=methods,
                        progress=False, stop_after=2)  # fmt: skip
    assert [c.variant for c in first.ran] == ["lr=0.002", "lr=0.005"]  # sweeps first
    missing = json.loads((tmp_path / "comparison.json").read_text())["missing_cells"]
    assert missing == [str(c) for c in compare_cells(first.config)[2:]]
    rest = run_compare(target, tmp_path, preset="tiny", seeds=2, methods=methods, progress=False)
    assert len(rest.ran) == 3
    with pytest.raises(TVLensError, match="another configuration") as e:
        run_compare(target, tmp_path, preset="tiny", seeds=2, epochs=2, progress=False)
    assert "\n" not in str(e.value)


@pytest.mark.slow  # over 20 s on 2 cores: `pytest -m slow`
def test_two_processes_share_the_cells(full, target_run, tmp_path):
    """workers=2: a spawned process and this one compute the cells between them, each once,
    leave no claim behind, and get the one-process numbers (up to float summation order)."""
    methods = ["zero_shot", "icl_5", "lora_qv"]
    out = tmp_path / "w"
    res = run_compare(str(target_run), out, preset="tiny", seeds=2, methods=methods,
                      device="cpu", progress=False, workers=2)  # fmt: skip
    want = compare_cells(res.config)
    assert sorted(map(str, res.ran)) == sorted(map(str, want))
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(
        cell_path(out, c).name for c in want
    )
    config = json.loads((out / "config.json").read_text())
    assert config["workers"] == 2 and config["torch_threads"] == max(1, available_cores() // 2)
    for m in methods:
        for g in ("in_domain", "unseen"):
            one = full.summary[m][f"{g}_first_token_mean"]
            assert res.summary[m][f"{g}_first_token_mean"] == pytest.approx(one, abs=0.05)


@pytest.mark.slow  # over 20 s on 2 cores: `pytest -m slow`
def test_claimed_cells_are_left_to_their_process(target, tmp_path):
    """A cell claimed by a live process is skipped (the compare stays incomplete); a claim
    whose process is gone is taken over."""
    from tvlens.runs import COMPARE, prepare_out_dir

    methods = ["zero_shot", "icl_5"]
    prepare_out_dir(tmp_path, COMPARE)  # the comparison another process started (signed)
    path = cell_path(tmp_path, Cell("icl_5", SELECTED, 0))
    assert claim_cell(path) and not claim_cell(path)  # held by this (live) process
    res = run_compare(target, tmp_path, preset="tiny", seeds=1, methods=methods, progress=False)
    assert res.ran == [Cell("zero_shot", SELECTED, 0)] and not path.is_file()
    path.with_suffix(".claim").write_text(f"{platform.node()} 999999999")  # no such process
    res = run_compare(target, tmp_path, preset="tiny", seeds=1, methods=methods, progress=False)
    assert res.ran == [Cell("icl_5", SELECTED, 0)] and not path.with_suffix(".claim").exists()


def test_workers_input(target):
    assert resolve_workers("auto", "cuda") == 1 and resolve_workers("auto", "cpu", True) == 1
    assert resolve_workers("auto", "cpu") == min(4, available_cores())
    for bad in ("x", 0, "-1"):
        with pytest.raises(TVLensError, match="positive integer"):
            resolve_workers(bad, "cpu")
    with pytest.raises(TVLensError, match="by name or folder"):
        run_compare(target, "unused", preset="tiny", workers=2, progress=False)


def test_bad_input_is_one_line(target, tmp_path):
    with pytest.raises(TVLensError, match="no instructions") as e:
        run_compare(target, tmp_path, preset="tiny", unseen=["fv/antonym"], progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(TVLensError, match="No nope.json") as e:
        run_compare(target, tmp_path, preset="tiny", unseen=["fv/nope"], progress=False)
    assert "\n" not in str(e.value)
    mine = tmp_path / "mine"  # a folder of the user's: refused, nothing in it changed
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(TVLensError, match="not empty") as e:
        run_compare(target, mine, preset="tiny", progress=False)
    assert "\n" not in str(e.value) and [p.name for p in mine.iterdir()] == ["notes.txt"]
    with pytest.raises(TVLensError, match="Unknown compare method"):
        get_compare_preset("tiny").with_overrides(methods=["nope"])
    with pytest.raises(TVLensError, match="both in-domain and unseen"):
        get_compare_preset("tiny").with_overrides(unseen=["l34/last"])


def test_cli(target_run, tmp_path):
    from tvlens.cli.main import atv as app

    out = tmp_path / "c"
    args = ["compare", "--target", str(target_run), "--out", str(out), "--preset", "tiny",
            "--seeds", "1", "--workers", "1", "--methods", "zero_shot,icl_5",
            "--device", "cpu"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "icl_5" in res.output and (out / "comparison.csv").is_file()
    bad = CliRunner().invoke(app, [*args[:-4], "--methods", "nope", "--device", "cpu"])
    assert bad.exit_code == 2 and "Unknown compare method" in bad.output
    bad = CliRunner().invoke(app, [*args, "--workers", "two"])
    assert bad.exit_code == 2 and "positive integer" in bad.output


@pytest.mark.slow  # over 20 s on 2 cores: `pytest -m slow`
def test_notebook_runs(tmp_path, run_notebook):
    run_notebook("06_atv_compare.ipynb", tmp_path)


def test_result_round_trips_and_plots(full, tmp_path):
    from tvlens.compare.run import CompareResult

    back = CompareResult.load(full.save(tmp_path / "r.json"))
    assert back.summary == full.summary and back.ran == full.ran and back.config == full.config
    df = full.to_dataframe()
    assert set(df["method"]) == set(full.rows()) and "icl_16" not in set(df["method"])
    assert set(df["instructions"]) == {"train", "heldout"}
    zs = df[(df.method == "zero_shot") & (df.group == "in_domain") & (df.instructions == "train")]
    assert zs["first_token"].item() == full.summary["zero_shot"]["in_domain_first_token_mean"]
    assert len(full.plot().data) == 2  # in-domain and unseen bars


def test_comparison_json_loads_back(target, tmp_path):
    """What run_compare writes as comparison.json loads back through its result class
    (issue 29), with the keys its readers know still at the top level."""
    from tvlens.compare.run import CompareResult
    from tvlens.runs import folder_kind

    res = run_compare(target, tmp_path / "c", preset="tiny", seeds=1, methods=["zero_shot"],
                      progress=False)  # fmt: skip
    path = tmp_path / "c" / "comparison.json"
    back = CompareResult.load(path)
    assert isinstance(back, CompareResult) and folder_kind(tmp_path / "c") == "compare"
    assert back.summary == res.summary and back.ran == res.ran and back.config == res.config
    assert back.out == res.out and back.table == res.table
    doc = json.loads(path.read_text())
    assert doc["complete"] and doc["missing_cells"] == [] and doc["methods"] == res.summary
    assert {"target", "device", "split", "metric", "verdicts", "config"} <= set(doc)
    assert back.to_dataframe()["method"].tolist() == ["zero_shot"] * len(back.to_dataframe())
    # each cell records the device that computed it; the report counts them
    cell = _cell(tmp_path / "c", "zero_shot")
    assert cell["device"] == device_name("cpu", cell["torch_threads"])
    assert doc["cell_devices"] == {cell["device"]: 1}


def test_a_folder_keeps_the_widest_sweep_widening_it_was_run_with(target, tmp_path):
    """A grid widened (or completed) once stays so: resuming without ``--sweep-widen``
    (``--sweep-joint``) plans and reports on that grid, so the cells chosen on it are not
    read as stale."""
    kw = {"preset": "tiny", "seeds": 1, "methods": ["zero_shot"], "progress": False}
    out = tmp_path / "c"
    assert run_compare(target, out, sweep_widen=2, **kw).config.sweep_widen == 2
    again = run_compare(target, out, **kw)
    assert again.config.sweep_widen == 2 and again.ran == []
    assert json.loads((out / "config.json").read_text())["config"]["sweep_widen"] == 2
    assert run_compare(target, out, sweep_widen=3, **kw).config.sweep_widen == 3  # wider: taken
    # a folder swept jointly stays joint (its choice may be a pair the cross never tries)
    assert run_compare(target, out, sweep_joint=True, **kw).config.sweep_joint
    assert run_compare(target, out, **kw).config.sweep_joint
    assert json.loads((out / "config.json").read_text())["config"]["sweep_joint"] is True


def test_cells_without_a_recorded_device_are_counted_as_such():
    a, b = {"device": "cpu (X, 2 cores, 1 threads)"}, {"torch_threads": 2}
    assert cell_devices([a, b, a]) == {"cpu (X, 2 cores, 1 threads)": 2, UNRECORDED_DEVICE: 1}


def test_a_users_peft_config_is_a_method(target, tmp_path, monkeypatch):
    """A peft config of the user's joins the comparison as a method: swept, trained on the
    in-domain queries only, its parameters those of its own config."""
    from peft import LoraConfig

    import tvlens.compare.registry as R
    from tvlens.compare.registry import peft_method

    monkeypatch.setattr(R, "REGISTRY", dict(R.REGISTRY))  # this test's methods stay here

    mine = peft_method("my_lora", LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"]))
    res = run_compare(target, tmp_path / "c", preset="tiny", seeds=1, progress=False,
                      methods=["zero_shot", mine])  # fmt: skip
    r = res.summary["my_lora"]
    L, d = target.n_layers, target.d_model
    assert r["trainable_params"] == L * 2 * (d + 3 * d)  # rank 2 on c_attn: d -> 3d
    assert _cell(res.out, "my_lora")["info"]["trained_on_tasks"] == IN_DOMAIN
    other = peft_method("my_lora", LoraConfig(r=4, target_modules=["c_attn"]))
    with pytest.raises(TVLensError, match="another name"):
        run_compare(target, tmp_path / "d", preset="tiny", methods=[other], progress=False)
    with pytest.raises(TVLensError, match="workers=1"):
        run_compare(target, tmp_path / "e", preset="tiny", methods=[mine], workers=2)


def test_the_claims_are_data_checked_when_the_comparison_is_configured(monkeypatch):
    import tvlens.compare.registry as R
    from tvlens.compare.config import CompareConfig
    from tvlens.errors import TVLensError

    R.check_claims()
    assert [c.name for c in R.CLAIMS if c.part_of is None] == [
        "ATV beats ICL and fixed task / function vectors (in-domain)",
        "ATV generalises to unseen tasks",
        "equal rank: ATV matches LoRA",
    ]
    assert ("atv_r8", "lora_r8", "in_domain") in R.CLAIMS[2].tests
    for r in R.PAIR_RANKS:  # the theorem's static affine form beside the rank-r pair
        assert (f"atv_affine_r{r}", f"lora_r{r}", "in_domain") in R.CLAIMS[2].tests
    monkeypatch.setattr(R, "CLAIMS", (R.Claim("x", (("atv", "nope", "in_domain"),)),))
    with pytest.raises(TVLensError, match=r"unregistered methods \['nope'\]"):
        CompareConfig()
    monkeypatch.setattr(R, "CLAIMS", (R.Claim("x", (("atv", "icl_5", "test"),)),))
    with pytest.raises(TVLensError, match="bad rule or group"):
        CompareConfig()


def test_each_block_belongs_to_the_methods_that_read_it():
    """CompareConfig's fields are the common ones (config.COMMON) and one block per method
    family (tvlens.compare.options), each the ``options_class`` of registered methods; a method
    reads (``cfg.X``) only common fields, and its settings only from its own block
    (``self.options.X``, X a field of its options class)."""
    import ast
    import inspect
    from dataclasses import fields

    from tvlens.compare import baselines, methods, retrieval, tuned
    from tvlens.compare.config import COMMON, CompareConfig
    from tvlens.compare.options import OPTIONS, PeftOptions, VectorOptions
    from tvlens.compare.registry import REGISTRY, method_names

    method_names()  # every extraction method's baseline registered too
    classes = {spec.build_class() for spec in REGISTRY.values()}
    names = {f.name for f in fields(CompareConfig)}
    assert set(COMMON) <= names and names - set(COMMON) == set(OPTIONS)
    assert {cls.options_class for cls in classes} - {None} == set(OPTIONS.values())

    def attrs(node, is_base) -> set[str]:
        return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and is_base(n.value)}

    def is_cfg(v) -> bool:  # cfg.X or self.ctx.cfg.X
        return (isinstance(v, ast.Name) and v.id == "cfg") or (
            isinstance(v, ast.Attribute) and v.attr == "cfg"
        )

    def is_block(v) -> bool:  # self.options.X, or opts.X / options.X (a block in a name)
        return (isinstance(v, ast.Name) and v.id in ("opts", "options")) or (
            isinstance(v, ast.Attribute) and v.attr == "options"
        )

    def own(classes) -> set[str]:
        return {f.name for c in classes if c.options_class for f in fields(c.options_class)}

    for module in (methods, baselines, retrieval, tuned):
        tree = ast.parse(inspect.getsource(module))
        mine = [c for c in classes if c.__module__ == module.__name__]
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                cls = getattr(module, node.name)
                block = own([cls]) if hasattr(cls, "options_class") else set()
            elif isinstance(node, ast.FunctionDef):  # a helper of the module's methods
                block = own(mine)
            else:
                continue
            extra = attrs(node, is_cfg) - set(COMMON) - {"options_for"}
            assert not extra, f"{module.__name__}.{node.name} reads cfg.{sorted(extra)}"
            extra = attrs(node, is_block) - block
            assert not extra, f"{module.__name__}.{node.name} reads options.{sorted(extra)}"
    assert tuned.PeftMethod.options_class is PeftOptions
    assert CompareConfig().options_for(PeftOptions).lora_rank == 8
    fv = ast.parse(inspect.getsource(baselines.FunctionVectorMethod))
    assert "top_k_heads" in attrs(fv, is_block) and baselines.TaskVectorMethod.options_class is (
        VectorOptions
    )


def test_a_worker_stops_when_its_parent_is_gone():
    """A killed compare runs no clean-up: its workers watch their parent and stop."""
    parents = iter([41, 41, 41, 1])  # re-parented to init after the third look
    slept, stopped = [], []
    watch_parent(41, getppid=lambda: next(parents), stop=stopped.append, sleep=slept.append)
    assert stopped == [1] and len(slept) == 3
