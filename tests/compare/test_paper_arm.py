"""The paper-faithful arm's data (issue 32): ``mc/<task>`` recasts, the ``paper`` instructions,
tasks told apart by the query alone, and each seed of a trained method drawing its own
training queries while dev and test stay fixed."""

import pytest

from tvlens.compare.config import PRESETS, CompareConfig
from tvlens.compare.data import load_compare_data
from tvlens.errors import TVLensError


@pytest.fixture(scope="module")
def paper():
    cfg = PRESETS["paper_cpu"].with_overrides(n_train=6, n_dev=3, n_test=4)
    return cfg, load_compare_data(cfg, "qa")


def test_paper_arm_tasks_share_answer_formats_and_no_inputs(paper):
    cfg, data = paper
    assert data.in_domain.tasks[:3] == ["sentiment", "person-sport", "commonsense_qa"]
    assert "mc_country-capital" in data.in_domain.tasks
    letters = {p.query.output for p in data.in_domain.test if p.task.startswith("mc_")}
    assert letters <= set("abcd")
    # an unseen task's inputs are never an in-domain task's, in any overlap mode
    for mode in ("exact", "lower"):
        assert all(v == 0 for u in data.unseen.tasks for v in data.overlap_modes[mode][u].values())
    # every task has its instruction, and the held-out one is new wording
    for t in data.in_domain.tasks + data.unseen.tasks:
        assert data.heldout_templates[t].instruction not in [x.instruction for x in
                                                             data.templates[t]]  # fmt: skip


def test_each_seed_draws_its_own_training_queries(paper):
    cfg, data = paper
    s0, s1, s2 = (data.seeded_train(s) for s in (0, 1, 2))
    assert s0 is data.in_domain  # seed 0: the split's own (what the sweep trained on)
    held = {(p.task, p.query.input) for p in data.in_domain.dev + data.in_domain.test}
    for s in (s1, s2):
        assert s.dev == s0.dev and s.test == s0.test
        assert not held & {(p.task, p.query.input) for p in s.train}
        for t in s.tasks:  # as many per task as the split's
            assert sum(p.task == t for p in s.train) == sum(p.task == t for p in s0.train)
    assert [p.query for p in s1.train] != [p.query for p in s0.train]
    assert [p.query for p in s1.train] != [p.query for p in s2.train]
    assert [p.query for p in data.seeded_train(1).train] == [p.query for p in s1.train]
    # the bare (no-instruction) data draws the same queries
    assert [p.query for p in data.bare().seeded_train(1).train] == [p.query for p in s1.train]


def test_report_settings_are_checked_and_leave_the_fingerprint():
    base = CompareConfig()
    assert base.with_overrides(equivalence_margin=0.1).fingerprint() == base.fingerprint()
    assert base.with_overrides(bootstrap_levels=["task"]).fingerprint() == base.fingerprint()
    assert base.with_overrides(seed_train_queries=True).fingerprint() != base.fingerprint()
    with pytest.raises(TVLensError, match="equivalence_margin must be in"):
        base.with_overrides(equivalence_margin=0)
    with pytest.raises(TVLensError, match="bootstrap_levels must be a non-empty subset"):
        base.with_overrides(bootstrap_levels=["tasks"])
    with pytest.raises(TVLensError, match="generator_input must be"):
        base.with_overrides(atv={"generator_input": "prompt"})
    # written only when not at its default: comparisons saved before it still resume
    assert "generator_input" not in base.to_dict()["atv"]
    assert PRESETS["paper_cpu"].to_dict()["atv"]["generator_input"] == "query"


def _grid(devs):
    return lambda v: devs.get(v["lr"])


def test_a_grid_widens_while_its_best_rate_is_on_an_edge():
    from tvlens.compare.setup import widened

    base = [{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 1e-2}]
    # best at the top: one more value a grid step (x ~3.33) above, then it is interior
    devs = {1e-3: 0.2, 3e-3: 0.4, 1e-2: 0.5, 0.0333: 0.45}
    assert [v["lr"] for v in widened(base, 2, _grid(devs))] == [1e-3, 3e-3, 1e-2, 0.0333]
    # best at the bottom: one below (1e-3 * 1e-3 / 3e-3)
    devs = {1e-3: 0.6, 3e-3: 0.4, 1e-2: 0.1, 3.33e-4: 0.7, 1.11e-4: 0.71}
    assert [v["lr"] for v in widened(base, 2, _grid(devs))][3:] == [3.33e-4, 1.11e-4]
    assert len(widened(base, 1, _grid(devs))) == 4  # at most `steps` values added
    # interior: unchanged; a variant not done yet: the grid waits for it
    assert widened(base, 2, _grid({1e-3: 0.1, 3e-3: 0.5, 1e-2: 0.2})) == base
    assert widened(base, 2, _grid({1e-3: 0.1, 3e-3: 0.5})) == base


def test_a_widened_grid_keeps_the_best_variants_other_settings():
    from tvlens.compare.setup import widened

    base = [{"lr": 1e-3, "scale": 0.01}, {"lr": 5e-3, "scale": 0.01},
            {"lr": 1e-3, "scale": 0.1}]  # fmt: skip
    devs = {(1e-3, 0.01): 0.3, (5e-3, 0.01): 0.6, (1e-3, 0.1): 0.4, (0.025, 0.01): 0.5}
    out = widened(base, 2, lambda v: devs.get((v["lr"], v["scale"])))
    # lr: one step above 5e-3; then λ: the best was tried at λ 0.01 only, its neighbour 0.1
    assert out[3:] == [{"lr": 0.025, "scale": 0.01}, {"lr": 5e-3, "scale": 0.1}]
    assert widened(base, 2, lambda v: devs.get((v["lr"], v["scale"])), keys=("lr",))[3:] == [
        {"lr": 0.025, "scale": 0.01}
    ]
    # the best at λ 0.1, alone on its learning-rate line: the neighbouring rate is tried at
    # it first (and the grid waits for that cell); along λ only, one λ step above 0.1
    devs[(1e-3, 0.1)], devs[(1e-3, 1.0)] = 0.9, 0.2
    out = widened(base, 2, lambda v: devs.get((v["lr"], v["scale"])))
    assert out[3:] == [{"lr": 5e-3, "scale": 0.1}]
    out = widened(base, 2, lambda v: devs.get((v["lr"], v["scale"])), keys=("scale",))
    assert out[3:] == [{"lr": 1e-3, "scale": 1.0}]


def test_a_joint_sweep_tries_every_pair_of_the_values_tried():
    from tvlens.compare import report
    from tvlens.compare.setup import grid_gaps, widened

    # a cross: the rates at λ 0.01, the λ values at rate 5e-3
    cross = [{"lr": 1e-3, "scale": 0.01}, {"lr": 5e-3, "scale": 0.01},
             {"lr": 5e-3, "scale": 0.001}, {"lr": 5e-3, "scale": 0.1}]  # fmt: skip
    corners = [{"lr": 1e-3, "scale": 0.001}, {"lr": 1e-3, "scale": 0.1}]
    assert grid_gaps(cross) == corners
    assert grid_gaps([{"lr": 1.0}, {"lr": 2.0}]) == []  # one setting: nothing to pair
    # no dev needed to complete the grid (steps 0); the cross itself is kept first, in order
    assert widened(cross, 0, lambda v: None, joint=True) == cross + corners
    assert widened(cross, 0, lambda v: None) == cross
    # the best rate at the top: the widened rate is tried with every λ too, and the grid
    # waits for those cells before it looks at the best again
    devs = {(v["lr"], v["scale"]): 0.3 for v in cross + corners} | {(5e-3, 0.01): 0.6}
    out = widened(cross, 2, lambda v: devs.get((v["lr"], v["scale"])), joint=True)
    assert out[6:] == [{"lr": 0.025, "scale": s} for s in (0.01, 0.001, 0.1)]
    devs.update({(0.025, s): 0.4 for s in (0.01, 0.001, 0.1)})  # interior now: no more values
    assert widened(cross, 2, lambda v: devs.get((v["lr"], v["scale"])), joint=True) == out
    # a corner the cross never tried can win; the report reads where it lies on the full grid
    assert report.grid_position(out, {"lr": 1e-3, "scale": 0.1}) == {
        "lr": {"chosen": 1e-3, "grid": [1e-3, 5e-3, 0.025], "position": "bottom"},
        "scale": {"chosen": 0.1, "grid": [0.001, 0.01, 0.1], "position": "top"},
    }


def test_overlaps_table_equals_input_overlap_pair_by_pair():
    from tvlens.compare.data import OVERLAP_MODES, input_overlap, overlaps
    from tvlens.tasks.core import Example, Task

    a = Task("a", (Example("Red fox", "x"), Example("blue  cat", "y"), Example("owl", "z")))
    b = Task("b", (Example("red fox", "p"), Example("cat blue", "q"), Example("Emu", "r")))
    table = overlaps({"a": a, "b": b}, ["a", "b"])
    for m in OVERLAP_MODES:
        assert table[m]["a"]["b"] == round(input_overlap(a, b, m), 4)
        assert table[m]["b"]["a"] == round(input_overlap(b, a, m), 4)
    assert table["words"]["a"]["b"] == round(2 / 3, 4) and table["exact"]["a"]["b"] == 0


def test_a_best_variant_alone_on_its_line_gets_its_neighbours():
    """ATV's cross-shaped sweep: λ values at one learning rate. When the best λ was tried at
    that rate only, the neighbouring rates are tried at it (then the usual widening)."""
    from tvlens.compare.setup import widened

    base = [{"lr": 1e-3, "scale": 1e-3}, {"lr": 5e-3, "scale": 1e-3}, {"lr": 2.5e-2, "scale": 1e-3},
            {"lr": 5e-3, "scale": 1e-2}]  # fmt: skip
    devs = {(1e-3, 1e-3): 0.2, (5e-3, 1e-3): 0.3, (2.5e-2, 1e-3): 0.3, (5e-3, 1e-2): 0.4,
            (2.5e-2, 1e-2): 0.35, (1e-3, 1e-2): 0.1}  # fmt: skip
    out = widened(base, 3, lambda v: devs.get((v["lr"], v["scale"])))
    # above first, then (still on the edge of [5e-3, 2.5e-2]) one step below: interior;
    # then λ, on the top edge of [1e-3, 1e-2] at lr 5e-3: one step above
    assert out[4:] == [{"lr": 2.5e-2, "scale": 1e-2}, {"lr": 1e-3, "scale": 1e-2},
                       {"lr": 5e-3, "scale": 0.1}]  # fmt: skip


def test_the_configs_bootstrap_levels_are_the_statistics_levels():
    """The configuration keeps its own copy (it imports no numpy): the same names."""
    from tvlens.compare.config import BOOTSTRAP_LEVELS
    from tvlens.evaluation.stats import LEVELS

    assert BOOTSTRAP_LEVELS == LEVELS


def test_a_cell_read_by_the_planner_is_read_again_when_rewritten(tmp_path):
    """The planner parses a cell once per version (it polls every few seconds), and never
    serves the old content of a file written again (a sweep cell recomputed)."""
    import json
    import os

    from tvlens.compare.setup import read_cell

    path = tmp_path / "cell.json"
    path.write_text(json.dumps({"info": {"best_dev_acc": 0.25}}))
    first = read_cell(path)
    assert read_cell(path) is first  # parsed once
    path.write_text(json.dumps({"info": {"best_dev_acc": 0.5}}))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # coarse clocks: a new mtime
    assert read_cell(path)["info"]["best_dev_acc"] == 0.5


def _write(path, doc):
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def test_a_reported_cell_is_computed_again_when_the_widened_sweep_chooses_another_rate(
    tmp_path, atv_target
):
    """``sweep_widen`` is outside the fingerprint (a folder may widen later): a reported cell
    checks its own variant against the sweep's choice; stale cells are moved under stale/
    (nothing lost) and computed again, and the report leaves them out meanwhile."""
    from tvlens.compare.context import CompareContext
    from tvlens.compare.run import get_compare_preset
    from tvlens.compare.setup import Cell, cell_path, cell_state, compare_cells
    from tvlens.compare.workers import run_cells

    cfg = get_compare_preset("tiny").with_overrides(methods=["lora_qv"], seeds=2, sweep_widen=1)
    assert cfg.fingerprint() == cfg.with_overrides(sweep_widen=0).fingerprint()
    out = tmp_path
    for lr, dev in ((0.002, 0.3), (0.005, 0.5)):
        _write(cell_path(out, Cell("lora_qv", f"lr={lr}", 0)), {"info": {"best_dev_acc": dev}})
    sel = [Cell("lora_qv", "selected", s) for s in (0, 1)]
    for c in sel:
        _write(cell_path(out, c), {"variant_values": {"lr": 0.005}, "seed": c.seed})
        _write(out / "runs" / f"lora_qv__selected__seed{c.seed}" / "metrics.json", {})
    # best on the top edge: the grid widens by one value, and the choice waits for it
    extra = Cell("lora_qv", "lr=0.0125", 0)
    assert compare_cells(cfg, out)[-3:] == [extra, *sel]
    assert [cell_state(cfg, out, c) for c in (extra, *sel)] == ["missing", "done", "done"]
    # the new rate wins on dev: the reported cells were trained with another rate
    _write(cell_path(out, extra), {"info": {"best_dev_acc": 0.7}})
    assert [cell_state(cfg, out, c) for c in sel] == ["stale", "stale"]
    from tvlens.compare.report import load_cells

    assert load_cells(out, cfg)[0] == {}  # the report leaves stale cells out
    computed = []

    def compute(ctx, cell):
        computed.append(cell)
        return {"variant_values": {"lr": 0.0125}, "seed": cell.seed}

    from tvlens.compare.data import load_compare_data
    from tvlens.models import load_model

    target, data = load_model(atv_target, device="cpu"), load_compare_data(cfg, "arrow")
    ctx = CompareContext(cfg, target, data, out, "cpu", "arrow", progress=False)
    assert run_cells(ctx, compare_cells(cfg, out), compute) == sel and computed == sel
    assert [cell_state(cfg, out, c) for c in sel] == ["done", "done"]
    stale = sorted(p.name.split("__2")[0] for p in (out / "cells" / "stale").iterdir())
    assert stale == ["lora_qv__selected__seed0", "lora_qv__selected__seed1"]
    assert len(list((out / "runs" / "stale").iterdir())) == 2
    # a value equal but for float rounding is the same variant (a widened value is rounded)
    _write(cell_path(out, sel[0]), {"variant_values": {"lr": 0.0125 * (1 + 1e-12)}})
    assert cell_state(cfg, out, sel[0]) == "done"
