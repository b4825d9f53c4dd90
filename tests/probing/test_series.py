"""TD over a checkpoint series, correlations with accuracy, and `tvlens probe`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tvlens.cli import app
from tvlens.errors import TVLensError
from tvlens.models import list_checkpoints, load_model
from tvlens.probing import correlation, td_by_layer, td_over_checkpoints


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def test_correlation_known_answers():
    assert correlation([0, 1, 2, 3], [1, 3, 5, 7])["pearson_r"] == pytest.approx(1.0)
    assert correlation([0, 1, 2, 3], [3, 2, 1, 0])["r2"] == pytest.approx(1.0)
    assert correlation([0, 1, 2], [1, 1, 1])["pearson_r"] is None  # constant accuracy


def test_series_is_the_per_checkpoint_td_and_accuracy(run):
    revs = [c.revision for c in list_checkpoints(run)][-2:]
    series = td_over_checkpoints(run, revs, n_prompts=16, progress=False, device="cpu")
    assert series.revisions == revs
    assert series.table.shape == (2, 2)  # layers × checkpoints
    # Each column equals td_by_layer on that checkpoint alone.
    m = load_model(run, revision=revs[0], device="cpu")
    alone = td_by_layer(m, m.training_suite(), n_prompts=16)
    np.testing.assert_allclose(series.table[:, 0], alone.td)
    data = json.loads(json.dumps(series.to_dict()))  # valid JSON (no NaN)
    assert [c["step"] for c in data["checkpoints"]] == series.steps
    assert set(data["checkpoints"][0]["accuracy"]) == set(m.training_suite().names)
    assert set(data["correlations"]) == {"per_checkpoint", "per_task", "pooled"}


def test_a_model_folder_is_probed_as_it_is(run):
    """Not a run: the one model (it used to ask for revisions, then reject every one)."""
    folder = list_checkpoints(run)[-1].path
    series = td_over_checkpoints(folder, n_prompts=16, progress=False, device="cpu")
    assert series.revisions == ["main"] and series.table.shape == (2, 1)


def test_cli_probe_writes_td_json_and_figures(run, tmp_path):
    out = tmp_path / "probe"
    rev = list_checkpoints(run)[-1].revision
    res = CliRunner().invoke(
        app,
        [
            "probe",
            "--model",
            str(run),
            "--out",
            str(out),
            "--revision",
            rev,
            "--n-prompts",
            "12",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    td = json.loads((out / "td.json").read_text())
    assert td["revisions"] == [rev] and len(td["td"]) == 2
    assert td["checkpoints"][0]["tasks"][-1] == "null"
    for name in ["td_by_layer", "td_heatmap", "td_vs_accuracy", "projection"]:
        assert (out / f"{name}.html").is_file()


def test_a_model_in_memory_is_probed_like_its_folder(run, tmp_path):
    """An HF model object with its tokenizer: the same TD and accuracy as its folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tvlens.probing import run_probe

    folder = list_checkpoints(run)[-1].path
    on_disk = load_model(folder, device="cpu")
    suite, k = on_disk.training_suite(), int(on_disk.spec.train_info.get("k", 5))
    want = td_over_checkpoints(folder, suite=suite, k=k, n_prompts=16, progress=False)
    hf = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    got = td_over_checkpoints(
        hf, suite=suite, k=k, n_prompts=16, progress=False, tokenizer=tok, device="cpu"
    )
    np.testing.assert_allclose(got.table, want.table, atol=1e-6)
    assert got.accuracy == want.accuracy
    again = run_probe(got_model := load_model(folder, device="cpu"), tmp_path / "p", suite=suite,
                      k=k, n_prompts=16, progress=False)  # fmt: skip
    assert again.model == got_model.name
    np.testing.assert_allclose(again.table, want.table, atol=1e-6)
    with pytest.raises(TVLensError, match="revisions="):
        td_over_checkpoints(got_model, revisions=["step1"], suite=suite)
