"""The pretrained-model experiment runners, on a tiny model (their numbers on SmolLM2 are in
docs/results/pretrained.md); each output agrees with the library call it summarises."""

from __future__ import annotations

import json

import pytest

from tvlens.errors import TVLensError
from tvlens.experiments import head_comparison, sized_suite, task_decodability_table, vector_table
from tvlens.experiments.pretrained import (
    DecodabilityTable,
    HeadComparison,
    VectorTable,
    combine_vector_tables,
    layer_finetuning,
)
from tvlens.tasks import Task, TaskSuite, get_suite


@pytest.fixture(scope="module")
def suite(letters_task) -> TaskSuite:
    pairs = zip(letters_task.outputs, letters_task.inputs, strict=True)
    back = Task.from_pairs("back", list(pairs))
    return TaskSuite("letters", (letters_task, back))


def test_sized_suite_caps_and_dedups():
    s = get_suite("words")
    small = sized_suite(s, 20, ["antonyms", "uppercase"], seed=0)
    assert small.names == ["antonyms", "uppercase"]
    assert all(len(t) == 20 for t in small)
    assert set(small["antonyms"].examples) <= set(s["antonyms"].examples)
    assert sized_suite(s, 20, ["antonyms"], seed=0)["antonyms"] == small["antonyms"]
    dup = Task.from_pairs("d", [("a", "b"), ("a", "c"), ("x", "y")])
    assert len(sized_suite(TaskSuite("s", (dup,)))["d"]) == 2


@pytest.mark.slow  # over 20 s on 2 cores: `pytest -m slow`
def test_vector_table_matches_its_rows(make_tiny, letters_tokenizer, suite, tmp_path):
    model = make_tiny("llama", "llama", letters_tokenizer).model
    res = vector_table(model, {"letters": suite}, tmp_path, k=2, n_extract=4, progress=False)
    assert [r["task"] for r in res["rows"]] == ["letters", "back"]
    s = res["summary"]
    assert s["icl"] == pytest.approx(sum(r["icl"] for r in res["rows"]) / 2)
    assert res["config"]["prompt_bos"] == model.prompt_bos
    saved = json.loads((tmp_path / "letters" / "results.json").read_text())
    assert saved["tasks"]["back"]["icl"] == res["rows"][1]["icl"]
    assert "| letters | back |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "letters" / "layer_sweep.html").is_file()
    # The same run split over two processes combines into the same rows and summary.
    one = vector_table(model, {"letters": suite.select(["letters"])}, tmp_path / "a", k=2,
                       n_extract=4, progress=False)  # fmt: skip
    two = vector_table(model, {"letters": suite.select(["back"])}, tmp_path / "b", k=2,
                       n_extract=4, seed=0, progress=False)  # fmt: skip
    both = combine_vector_tables([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")
    assert [r["task"] for r in both["rows"]] == ["letters", "back"]
    assert both["rows"][0] == one["rows"][0] == res["rows"][0]
    assert both["summary"]["n_tasks"] == 2 and two["summary"]["n_tasks"] == 1
    # A typed result: its table, and save / load round trip.
    df = res.to_dataframe()
    assert list(df["task"]) == ["letters", "back"] and list(df["icl"]) == [r["icl"] for r in
                                                                          res["rows"]]  # fmt: skip
    assert VectorTable.load(res.save(tmp_path / "res.json")) == res
    # what the run wrote loads back too (issue 29), and so do the per-suite reports
    assert VectorTable.load(tmp_path / "vectors.json") == res
    assert VectorTable.load(tmp_path / "ab" / "vectors.json") == both
    from tvlens.injection.evaluate import VectorReport

    rep = VectorReport.load(tmp_path / "letters" / "results.json")
    assert rep.to_dict()["tasks"]["back"]["icl"] == res["rows"][1]["icl"]
    assert res["config"]["answer_token"] == "first"  # said, not silent
    fig = res.plot()
    assert [t.name for t in fig.data] == ["zero_shot", "icl", "hendel", "fv"]
    assert list(fig.data[1].y) == [r["icl"] for r in res["rows"]]


def test_task_decodability_table(make_tiny, letters_tokenizer, suite, tmp_path):
    model = make_tiny("llama", "llama", letters_tokenizer).model
    res = task_decodability_table(model, {"letters": suite}, tmp_path, k=2, n_prompts=6,
                                  knn_k=3, progress=False)  # fmt: skip
    r = res["suites"]["letters"]
    assert len(r["td_by_layer"]) == model.n_layers
    assert r["peak_td"] == max(r["td_by_layer"])
    assert r["chance"] == pytest.approx(1 / 3)  # two tasks and the Null task
    assert set(r["td_at_peak"]) == {"letters", "back"}
    td = json.loads((tmp_path / "letters" / "td.json").read_text())
    assert td["checkpoints"][0]["td"] == r["td_by_layer"]
    df = res.to_dataframe()
    assert sorted(df["task"]) == ["back", "letters"]
    assert dict(zip(df["task"], df["td_at_peak"], strict=True)) == r["td_at_peak"]
    assert list(res.plot().data[0].y) == list(df["td_at_peak"])
    assert DecodabilityTable.load(tmp_path / "td.json") == res  # loads back (issue 29)


def test_head_comparison(make_tiny, letters_tokenizer, suite, tmp_path):
    model = make_tiny("llama", "llama", letters_tokenizer).model
    res = head_comparison(model, suite, ["letters"], tmp_path, k=2, n_prompts=4, n_extract=4,
                          top=3)  # fmt: skip
    r = res["tasks"]["letters"]
    assert set(r["top"]) == {"exact", "attribution", "aie"}
    assert all(len(v) == 3 for v in r["top"].values())
    ov = r["overlap_top3"]
    row = res.to_dataframe().iloc[0]
    assert row["task"] == "letters" and row["exact_vs_aie"] == ov["exact_vs_aie"]
    assert list(res.plot().data[0].y) == [ov["exact_vs_aie"]]
    assert HeadComparison.load(tmp_path / "heads.json") == res  # loads back (issue 29)
    assert ov["exact_vs_aie"] == len({tuple(x) for x in r["top"]["exact"]}
                                     & {tuple(x) for x in r["top"]["aie"]})  # fmt: skip


def test_layer_finetuning_on_a_model_tvlens_did_not_train(make_tiny, letters_tokenizer, suite,
                                                          tmp_path):  # fmt: skip
    """A plain HF folder (no tvlens.json) is fine-tuned first-k / last-k on half of each task's
    pairs and measured on the other half; the tuned folders load with the base's BOS policy."""
    from tvlens.models import load_model
    from tvlens.probing.family import TokenFamily

    tiny = make_tiny("llama", "llama", letters_tokenizer)
    assert not (tiny.folder / "tvlens.json").exists()
    res = layer_finetuning(tiny.folder, suite, tmp_path / "ft", k_layers=1, steps=2,
                           batch_size=4, k=2, n_prompts=6, progress=False)  # fmt: skip
    assert [r["which"] for r in res["rows"]] == ["first", "last"]
    assert list(res.to_dataframe()["which"]) == ["first", "last"]
    assert len(res.plot().data) == 4  # before and after, first and last blocks
    assert [r["blocks"] for r in res["rows"]] == [[0], [tiny.model.n_layers - 1]]
    assert all(len(r["td_by_layer_after"]) == tiny.model.n_layers for r in res["rows"])
    cfg = res["config"]
    assert cfg["family"]["suite"]["part"] == 0 and cfg["eval_family"]["suite"]["part"] == 1
    assert cfg["prompt_bos"] == tiny.model.prompt_bos
    for which in ("first", "last"):
        assert load_model(tmp_path / "ft" / which).prompt_bos == tiny.model.prompt_bos
    assert "| first 1 ([0])" in (tmp_path / "ft" / "table.md").read_text()
    # Training prompts start with the token the policy gives (here a stand-in id).
    fam = TokenFamily(suite, k=2)
    trainable = fam.trainable(tiny.folder)
    assert trainable.info["source"] == str(tiny.folder)
    trainable.bos_id = 9
    batch = fam.train_batch(trainable, step=0, batch_size=3, seed=0)
    assert (batch.input_ids[:, 0] == 9).all()
    first_real = batch.zs_attention_mask.argmax(-1)  # zero-shot prompts are left-padded
    assert (batch.zs_input_ids.gather(1, first_real[:, None]) == 9).all()


def test_layer_finetuning_bad_fraction_is_one_line(suite, tmp_path):
    with pytest.raises(TVLensError, match="train_fraction"):
        layer_finetuning("nowhere", suite, tmp_path, train_fraction=1.0)


@pytest.mark.slow  # over 20 s on 2 cores: `pytest -m slow`
def test_pretrained_commands_take_names(make_tiny, letters_tokenizer, suite, tmp_path):
    """`tvlens pretrained ...` on a model folder and a suite folder, through the names path
    (``named_suites``: one task kept, pairs capped): the same table as the call on objects."""
    from typer.testing import CliRunner

    from tvlens.cli import app
    from tvlens.models import load_model

    tiny = make_tiny("gpt2", "gpt2", letters_tokenizer)
    folder = suite.save(tmp_path / "suite")
    common = ["--model", str(tiny.folder), "--suite", str(folder), "--device", "cpu"]
    run = CliRunner()
    args = ["--task", "back", "--n-examples", "12", "--k", "2", "--n-extract", "4"]
    res = run.invoke(app, ["pretrained", "vectors", *common, *args, "--out", str(tmp_path / "v")])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "v" / "vectors.json").read_text())
    assert [r["task"] for r in got["rows"]] == ["back"]
    model = load_model(tiny.folder, device="cpu")
    want = vector_table(model, str(folder), tmp_path / "w", tasks=["back"], n_examples=12, k=2,
                        n_extract=4, progress=False)  # fmt: skip
    assert got["rows"] == want["rows"]
    res = run.invoke(app, ["pretrained", "combine", str(tmp_path / "v"), str(tmp_path / "w"),
                           "--out", str(tmp_path / "vw")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "vw" / "vectors.json").read_text())["rows"]) == 2
    res = run.invoke(app, ["pretrained", "decodability", *common, "--k", "2", "--n-prompts",
                           "6", "--out", str(tmp_path / "td")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "td" / "td.json").is_file()
    args = ["--k", "2", "--n-prompts", "4", "--n-extract", "4", "--top", "3"]
    res = run.invoke(app, ["pretrained", "heads", *common, *args, "--out", str(tmp_path / "h")])
    assert res.exit_code == 0, res.output
    assert set(json.loads((tmp_path / "h" / "heads.json").read_text())["tasks"]) == set(
        suite.names[:2]
    )  # no --task: the suite's first two
    args = ["--k-layers", "1", "--steps", "2", "--batch-size", "4", "--k", "2", "--n-prompts", "6"]
    res = run.invoke(app, ["pretrained", "finetune", *common, "--task", "letters", *args,
                           "--out", str(tmp_path / "ft")])  # fmt: skip
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert [r["which"] for r in got["rows"]] == ["first", "last"]
