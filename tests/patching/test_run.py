"""``run_patching`` / ``tvlens patch`` on a tvlens-trained model, and the patching heatmaps."""

import json

import pytest
import torch
from typer.testing import CliRunner

from tvlens.cli import app
from tvlens.errors import EmptyTaskError
from tvlens.models import load_model
from tvlens.patching import PatchResult, patching_prompts, run_patching
from tvlens.plotting import plot_patching, png_unavailable


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    """The tiny preset after 300 steps: ICL works (the demonstrations matter to the answer)."""
    return tiny_run


def test_prompts_have_equal_lengths_and_no_padding(run_dir):
    model = load_model(run_dir, device="cpu")
    clean, corrupted = patching_prompts(model, model.training_suite(), k=3, n_prompts=4)
    assert clean.tokens.shape == corrupted.tokens.shape
    assert bool(clean.attention_mask.all()) and bool(corrupted.attention_mask.all())
    assert torch.equal(clean.answer_first, corrupted.answer_first)  # same queries
    assert not torch.equal(clean.tokens, corrupted.tokens)  # labels shuffled
    with pytest.raises(EmptyTaskError, match="choose from"):
        patching_prompts(model, model.training_suite(), 3, 4, tasks=["nope"])


def test_run_patching_both_methods_writes_results(run_dir, tmp_path):
    run = run_patching(
        str(run_dir), tmp_path, component="heads", method="both", k=3, n_prompts=4,
        device="cpu", progress=False,
    )  # fmt: skip
    data = json.loads((tmp_path / "patching.json").read_text())
    assert data["exact"]["dims"] == ["layer", "head"]
    assert data["attribution"]["method"] == "attribution"
    assert -1 <= data["spearman"] <= 1
    # Shuffling the labels hurts the tiny model: the clean run beats the corrupted one.
    assert data["exact"]["clean_metric"] > data["exact"]["corrupted_metric"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["n_prompts"] == run.main.info["n_prompts"] == 16  # 4 tasks x 4 prompts
    assert (tmp_path / "patching_heads.html").is_file()
    assert (tmp_path / "patching_heads_attribution.html").is_file()
    frame = run.to_dataframe()  # tidy: one row per (method, layer, head)
    n = run.exact.values.numel()
    assert len(frame) == 2 * n and list(frame["method"].unique()) == ["exact", "attribution"]
    exact = frame[frame.method == "exact"]
    assert exact["value"].tolist() == pytest.approx(run.exact.values.flatten().tolist())


@pytest.mark.parametrize(
    ("component", "positions", "dims", "kind"),
    [
        ("resid", "each", ("layer", "pos"), "heatmap"),
        ("heads", "each", ("layer", "pos", "head"), "heatmap"),
        ("mlp", "all", ("layer",), "bar"),
        ("heads", "last", ("layer", "head"), "heatmap"),
    ],
)
def test_heatmaps_label_their_axes(run_dir, component, positions, dims, kind):
    run = run_patching(
        str(run_dir), None, component=component, positions=positions, k=3, n_prompts=2,
        device="cpu", progress=False,
    )  # fmt: skip
    res: PatchResult = run.main
    assert res.dims == dims
    fig = plot_patching(res)
    trace = fig.data[0]
    assert trace.type == kind
    if "pos" in dims:
        assert list(trace.x) == res.pos_labels
        assert res.pos_labels[-1].endswith("->") and res.pos_labels[0] == "0 <bos>"
    if dims == ("layer", "pos", "head"):
        assert len(trace.y) == len(res.layers) * res.values.shape[2]


def test_cli_patch(run_dir, tmp_path):
    runner = CliRunner()
    args = ["patch", "--model", str(run_dir), "--out", str(tmp_path), "--k", "3"]
    res = runner.invoke(app, [*args, "--component", "resid", "--positions", "each",
                              "--n-prompts", "2", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "exact patching, resid (each)" in res.output
    # HTML always; the PNG where a browser is (bash install.sh --png), else one line saying
    # how to get it; figures.json says which.
    figures = json.loads((tmp_path / "figures.json").read_text())["patching_resid"]
    assert (tmp_path / "patching_resid.html").is_file()
    if png_unavailable() is None:
        assert (tmp_path / "patching_resid.png").is_file() and figures["png"]
    else:
        assert not (tmp_path / "patching_resid.png").exists() and figures["png"] is None
        assert res.output.count("bash install.sh --png") == 1
    res = runner.invoke(app, [*args, "--component", "embed", "--device", "cpu"])
    assert res.exit_code == 2 and "component must be one of" in res.output
    assert "Traceback" not in res.output
