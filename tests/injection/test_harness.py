"""The harness of issue 31 on the tiny trained model: every row (zero-shot, ICL, each method)
scored on the same test queries by exact match and first token, with the share of ICL
recovered, KL to ICL, the cost, bootstrap intervals, per-query predictions and figures."""

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from tvlens.evaluation.scoring import kl_to_reference
from tvlens.extraction import TaskVector
from tvlens.extraction.methods import Extracted, ExtractionMethod
from tvlens.extraction.writes import Intervention, Write
from tvlens.injection import evaluate_task_vectors
from tvlens.injection.evaluate import (
    HARNESS_FILE,
    VectorReport,
    count_forwards,
    harness_rows,
    steer_for,
)
from tvlens.models import load_model
from tvlens.tasks import sample_prompts, tokenize_prompts
from tvlens.tasks.core import Example, Task

K = 3


@pytest.fixture(scope="module")
def trained(tiny_run):
    return load_model(tiny_run, device="cpu")


@pytest.fixture(scope="module")
def harness(trained, tmp_path_factory):
    """``run_task_vectors`` with both registered residual methods and one that writes at every
    position (every_step decoding), HTML figures only."""
    from tvlens.injection import run_task_vectors

    out = tmp_path_factory.mktemp("harness-out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TVLENS_NO_PNG", "1")
        report = run_task_vectors(trained, out, methods=("hendel", "fv", AddEverywhere()),
                                  progress=False, k=K)  # fmt: skip
    return out, report, json.loads((out / "results.json").read_text())


@dataclass(frozen=True)
class AddEverywhere(ExtractionMethod):
    """A method that adds ``scale`` times a fixed random direction at every position of every
    layer; its dev grid is the scale (0 first: the zero write, which changes nothing)."""

    name: ClassVar[str] = "everywhere"
    label: ClassVar[str] = "random add (every position)"
    column: ClassVar[str] = "everywhere (layer)"

    def extract(self, model, task, *, k, n_extract, seed, template, max_batch, progress):
        g = torch.Generator().manual_seed(seed)
        v = torch.randn(1, model.d_model, generator=g)
        # a forward the cost counter must see: one batch of two prompts
        with torch.no_grad():
            model(torch.ones(2, 3, dtype=torch.long))
        return Extracted(TaskVector(v, (0,), model.spec.name, task.name, self.name, n_extract))

    def dev_grid(self, model, extracted):
        return [{"scale": 0.0}, {"scale": 3.0}]

    def intervention(self, model, extracted, *, scale):
        v = extracted.vector.vectors[0]
        writes = [Write(layer, v, "resid_post", "add", scale, positions="all")
                  for layer in range(model.n_layers)]  # fmt: skip
        return Intervention(tuple(writes), method=self.name)


ROWS = ("zero_shot", "icl", "hendel", "fv", "everywhere")


def test_exact_match_equals_first_token_on_single_token_answers(harness):
    """The tiny suite's answers are one token each: greedy exact match is the first-token
    score, query by query, and equals the report's first-token columns (computed by other
    code: teacher-forced for ICL and zero-shot, the layer sweep for the methods)."""
    _, report, _ = harness
    for q in report.queries:
        assert q["value"] == q["first_token"], q
    for name, t in report.tasks.items():
        assert t.icl_exact == t.icl and t.zero_shot_exact == t.zero_shot, name
        for m, r in t.methods.items():
            assert r.exact_match == pytest.approx(r.task_vector), (name, m)
            assert r.recovered_exact == pytest.approx(r.recovered), (name, m)


def test_every_row_is_scored_on_the_same_queries(harness):
    _, report, _ = harness
    by_row = {}
    for q in report.queries:
        by_row.setdefault(q["method"], set()).add((q["task"], q["query"]))
    assert set(by_row) == set(ROWS)
    assert len({frozenset(s) for s in by_row.values()}) == 1
    assert len(by_row["icl"]) == sum(t.n_test for t in report.tasks.values())
    # predictions are stored for inspection: the ICL row's prediction is its answer when right
    for q in report.queries:
        assert isinstance(q["prediction"], str)
        if q["method"] == "icl" and q["value"] == 1.0:
            assert q["prediction"] == q["answer"].strip()


def test_kl_to_icl(harness, trained):
    """KL(ICL || ICL) is 0; every other row's KL is >= 0, the zero-shot row's > 0 on average
    (the trained model reads its demonstrations); a method's column is the mean of its
    queries' KL; the zero write of AddEverywhere leaves the zero-shot prompt's KL as it is."""
    _, report, _ = harness
    for q in report.queries:
        if q["method"] == "icl":
            assert q["kl_to_icl"] == 0.0
        else:
            assert q["kl_to_icl"] >= 0.0
    assert report.mean("zero_shot_kl") > 0.0
    for name, t in report.tasks.items():
        for m, r in t.methods.items():
            qs = [q["kl_to_icl"] for q in report.queries if q["method"] == m and q["task"] == name]
            assert r.kl_to_icl == pytest.approx(np.mean(qs), rel=1e-5)
        if t.methods["everywhere"].chosen == {"scale": 0.0}:
            assert t.methods["everywhere"].kl_to_icl == pytest.approx(t.zero_shot_kl, rel=1e-4)
    logits = torch.randn(4, trained.tokenizer.vocab_size if hasattr(trained.tokenizer,
                         "vocab_size") else 20)  # fmt: skip
    assert torch.equal(kl_to_reference(logits, logits), torch.zeros(4))


def test_steer_follows_the_writes(harness):
    _, report, _ = harness
    for t in report.tasks.values():
        assert t.methods["hendel"].steer == t.methods["fv"].steer == "first_step"
        assert t.methods["everywhere"].steer == "every_step"
    v = torch.zeros(4)
    assert steer_for(Intervention((Write(0, v, positions="last"),))) == "first_step"
    assert steer_for([Write(0, v), Write(1, v, positions="all")]) == "every_step"


def test_intervals_contain_the_mean(harness):
    """Each row's 95% interval holds its mean over tasks; the difference to ICL is the
    difference of the means and its interval holds it."""
    _, report, data = harness
    iv = report.intervals
    assert set(iv) == set(ROWS) and data["intervals"] == iv
    means = {
        "zero_shot": (report.mean("zero_shot_exact"), report.mean("zero_shot")),
        "icl": (report.mean("icl_exact"), report.mean("icl")),
        **{m: (report.mean("exact_match", m), report.mean("task_vector", m))
           for m in ("hendel", "fv", "everywhere")},
    }  # fmt: skip
    for row, (exact, first) in means.items():
        for metric, mean in (("exact", exact), ("first_token", first)):
            d = iv[row][metric]
            assert d["estimate"] == pytest.approx(mean)
            assert d["low"] <= d["estimate"] <= d["high"], (row, metric)
            assert 0.0 <= d["low"] and d["high"] <= 1.0
            if row != "icl":
                diff = iv[row][f"{metric}_minus_icl"]
                assert diff["estimate"] == pytest.approx(
                    mean - means["icl"][metric == "first_token"]
                )
                assert diff["low"] <= diff["estimate"] <= diff["high"]
        assert d["n_tasks"] == len(report.tasks)
    assert "exact_minus_icl" not in iv["icl"]


def test_cost_columns(harness, trained):
    """Extraction is counted around extract: AddEverywhere runs exactly one forward of two
    prompts; the real methods run many. Latencies are seconds per query, measured."""
    _, report, _ = harness
    for t in report.tasks.values():
        e = t.methods["everywhere"]
        assert (e.extract_forwards, e.extract_prompts) == (1, 2)
        for m in ("hendel", "fv"):
            r = t.methods[m]
            assert r.extract_forwards >= 1 and r.extract_prompts >= r.extract_forwards
            assert r.extract_s > 0
        for r in t.methods.values():
            assert r.latency_s > 0 and np.isfinite(r.added_latency_s)
        assert t.icl_latency_s > 0 and t.zero_shot_latency_s > 0
    # FV reads many corrupted runs: it costs more forwards than the task vector
    assert report.mean("extract_prompts", "fv") > report.mean("extract_prompts", "hendel")
    with count_forwards(trained) as c, torch.no_grad():
        trained(torch.ones(3, 5, dtype=torch.long))
        trained(torch.ones(1, 5, dtype=torch.long))
    assert c == [2, 4]


def test_report_loads_back_with_the_harness(harness):
    out, report, data = harness
    back = VectorReport.load(out / "results.json")
    assert back.queries == report.queries and back.intervals == report.intervals
    for name, t in report.tasks.items():
        b = back.tasks[name]
        assert (b.icl_exact, b.zero_shot_exact, b.zero_shot_kl) == (
            t.icl_exact, t.zero_shot_exact, t.zero_shot_kl)  # fmt: skip
        assert b.methods == t.methods
    assert data["queries"] == report.queries
    assert data["summary"]["hendel"]["exact_match"] == pytest.approx(
        report.mean("exact_match", "hendel")
    )
    assert len(back.to_dataframe(by_query=True)) == len(report.queries)
    assert {"exact_match", "kl_to_icl", "extract_s"} <= set(back.to_dataframe().columns)


def test_figures_and_table_written(harness):
    """The heatmap's cells are each method's recovered share by exact match; the bar chart's
    bars and error bars are the intervals; harness.md has one line per row."""
    out, report, data = harness
    for f in ("recovered_heatmap.html", "exact_match.html", HARNESS_FILE):
        assert (out / f).is_file(), f
    from tvlens.plotting import plot_exact_match_intervals, plot_recovered_heatmap

    heat = plot_recovered_heatmap(data).data[0]
    assert list(heat.x) == list(report.tasks)
    for i, m in enumerate(("hendel", "fv", "everywhere")):
        assert list(heat.z[i]) == [t.methods[m].recovered_exact for t in report.tasks.values()]
    bars = plot_exact_match_intervals(report).data[0]
    assert list(bars.y) == [report.intervals[r]["exact"]["estimate"] for r in ROWS]
    hi = [report.intervals[r]["exact"]["high"] - report.intervals[r]["exact"]["estimate"]
          for r in ROWS]  # fmt: skip
    assert list(bars.error_y.array) == pytest.approx(hi)
    # the layer curves: a curve for the methods tuned by layer alone, a flat line at the test
    # accuracy of its dev choice for a method tuned otherwise (a strength grid)
    from tvlens.plotting import plot_layer_sweep

    traces = {tr.name: tr for tr in plot_layer_sweep(report).data}
    labels = report.config["labels"]
    assert labels["hendel"] in traces and labels["fv"] in traces
    flat = traces[labels["everywhere"]]
    assert flat.line.dash == "dashdot" and len(set(flat.y)) == 1
    assert (out / HARNESS_FILE).read_text() in str(report)  # what `tvlens vectors` prints
    table = (out / HARNESS_FILE).read_text().splitlines()
    assert len(table) == 2 + len(ROWS) and [r["row"] for r in harness_rows(report)] == list(ROWS)


def test_multi_token_answers(trained):
    """Answers of two tokens: answer_token="only" refuses them (one line, before any
    extraction); with "first" the first-token columns score their first token and exact match
    judges the whole answer, never above the first token, query by query."""
    from tvlens.errors import PromptError

    base = list(trained.training_suite())[:2]
    two = []
    for t in base:  # each answer followed by a second token: the answer's own first token
        exs = tuple(Example(e.input, f"{e.output} {e.output}") for e in t.examples)
        two.append(Task(f"{t.name}-twice", exs))
    batch = tokenize_prompts(sample_prompts(two[0], 0, 2, seed=0), trained)
    assert all(len(a) == 2 for a in batch.answer_ids)
    with pytest.raises(PromptError, match="answer_token='first'"):
        evaluate_task_vectors(trained, two, methods="hendel", k=K, progress=False)
    rep = evaluate_task_vectors(trained, two, methods="hendel", k=K, progress=False,
                                answer_token="first")  # fmt: skip
    assert rep.config["answer_token"] == "first"
    for q in rep.queries:
        assert q["value"] <= q["first_token"]
    for t in rep.tasks.values():
        assert t.icl_exact <= t.icl and t.zero_shot_exact <= t.zero_shot
        r = t.methods["hendel"]
        assert r.exact_match <= r.task_vector + 1e-9


def test_vector_table_carries_the_harness(make_tiny, letters_tokenizer, letters_task, tmp_path):
    """vector_table's rows hold exact match, share of ICL and KL per task and method; its
    summary the pooled intervals over suites (tasks named suite/task) and the cost; its
    table.md the harness table; combining two halves pools their queries again."""
    from tvlens.experiments import vector_table
    from tvlens.experiments.pretrained import combine_vector_tables
    from tvlens.tasks import TaskSuite

    model = make_tiny("llama", "llama", letters_tokenizer).model
    back = Task.from_pairs("back", list(zip(letters_task.outputs, letters_task.inputs,
                                            strict=True)))  # fmt: skip
    suites = {"a": TaskSuite("a", (letters_task,)), "b": TaskSuite("b", (back,))}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TVLENS_NO_PNG", "1")
        res = vector_table(model, suites, tmp_path / "t", k=2, n_extract=4, progress=False)
        for label in suites:
            vector_table(model, {label: suites[label]}, tmp_path / label, k=2, n_extract=4,
                         progress=False)  # fmt: skip
        both = combine_vector_tables([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")
    s = res["summary"]
    for r in res["rows"]:
        rep = VectorReport.load(tmp_path / "t" / r["suite"] / "results.json")
        t = rep.tasks[r["task"]]
        assert r["icl_exact"] == t.icl_exact and r["zero_shot_kl"] == t.zero_shot_kl
        for m in ("hendel", "fv"):
            assert r[f"{m}_exact"] == t.methods[m].exact_match
            assert r[f"{m}_kl"] == t.methods[m].kl_to_icl
    iv = s["intervals"]
    assert set(iv) == {"zero_shot", "icl", "hendel", "fv"}
    assert iv["hendel"]["exact"]["n_tasks"] == 2
    assert iv["hendel"]["exact"]["estimate"] == pytest.approx(s["hendel_exact"])
    assert s["cost"]["fv"]["extract_forwards"] >= 1
    assert "exact match [95% CI]" in (tmp_path / "t" / "table.md").read_text()
    assert both["summary"]["intervals"] == iv  # the same queries, pooled the same way
