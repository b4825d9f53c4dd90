"""The seed paper's experiments on tiny runs of both families: emergence over checkpoints,
the perturbation test, and first-k / last-k fine-tuning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tvlens.errors import LayerError, TVLensError
from tvlens.probing.experiments import (
    RegressionFamily,
    TokenFamily,
    emergence,
    family_for_run,
    perturbation,
)
from tvlens.tasks import get_suite
from tvlens.tasks.regression import RegressionMixture
from tvlens.training import train_synthetic
from tvlens.training.finetune import finetune_layers
from tvlens.training.regression import train_regression


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "run"
    train_synthetic(out, preset="tiny", device="cpu", progress=False, steps=150)
    return out


@pytest.fixture(scope="module")
def reg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reg") / "run"
    train_regression(out, preset="tiny", device="cpu", progress=False)
    return out


def test_emergence_token_run_shapes_and_keys(token_run):
    res = emergence(token_run, n_prompts=12, progress=False, revisions=[10, 150])
    assert res.kind == "tokens" and res.steps == [10, 150]
    assert np.array(res.td).shape == (2, 2)  # checkpoints x layers
    assert set(res.td_per_task[0][0]) == set(res.tasks) | {"null"}
    assert res.accuracy is not None and set(res.accuracy[1]) == set(res.tasks)
    d = res.to_dict()
    assert {"onsets", "peak_layer", "td_vs_neg_loss", "loss", "config"} <= set(d)
    json.dumps(d)


def test_emergence_regression_run_has_loss_and_no_accuracy(reg_run):
    fam = family_for_run(reg_run)
    assert isinstance(fam, RegressionFamily) and fam.n_points == 8
    res = emergence(reg_run, n_prompts=12, progress=False)
    assert res.kind == "regression" and res.accuracy is None
    assert len(res.steps) == len(res.td) == len(res.loss) >= 2
    assert all(0.0 <= v <= 1.0 for row in res.td for v in row)
    assert set(res.onsets()) == {"basis_0", "basis_1", "basis_2", "basis_3"}


def test_perturbation_shift_same_task_is_no_change_cross_task_changes(reg_run):
    fam = family_for_run(reg_run)
    model = fam.load(reg_run)
    res = perturbation(model, fam, layer=0, n_prompts=16, mode="shift")
    dl = res.delta_loss
    assert dl.shape == (4, 4)
    assert np.allclose(np.diag(dl), 0.0, atol=1e-5)
    assert np.abs(dl[~np.eye(4, dtype=bool)]).mean() > 5e-4  # another basis moves the query
    rep = perturbation(model, fam, layer=1, n_prompts=16, mode="replace")
    assert rep.mode == "replace" and rep.accuracy is None
    json.dumps(rep.to_dict())
    with pytest.raises(LayerError):
        perturbation(model, fam, layer=7)
    with pytest.raises(TVLensError):
        perturbation(model, fam, layer=0, mode="swap")


def test_perturbation_token_family_own_mean_keeps_accuracy_better_than_others(token_run):
    fam = family_for_run(token_run)
    model = fam.load(token_run)
    res = perturbation(model, fam, layer=0, n_prompts=16, mode="shift")
    da = res.delta_accuracy
    assert np.allclose(np.diag(da), 0.0)  # own mean: no change at all
    assert res.summary()["cross_task_delta_accuracy"] <= 0.0


def test_finetune_first_k_only_changes_first_k_blocks(token_run, tmp_path):
    fam = TokenFamily(get_suite("latent", n_tasks=2, n_symbols=8, seed=5), k=4)
    res = finetune_layers(
        token_run, fam, tmp_path / "ft", k_layers=1, steps=3, n_prompts=12, progress=False
    )
    assert [r.which for r in res.rows] == ["first", "last"]
    base = load_file(str(sorted((token_run / "checkpoints").iterdir())[-1] / "model.safetensors"))
    for which, changed in (("first", "h.0."), ("last", "h.1.")):
        tuned = load_file(str(tmp_path / "ft" / which / "model.safetensors"))
        for name, w in base.items():
            same = torch.equal(w, tuned[name])
            assert same == (changed not in name), (which, name)
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["k_layers"] == 1 and "TD before" in metrics["table"]
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["steps"] == 3
    with pytest.raises(TVLensError):
        finetune_layers(token_run, fam, tmp_path / "bad", k_layers=0, progress=False)
    with pytest.raises(TVLensError):
        family_for_run(tmp_path / "no-run")


def test_finetune_regression_family(reg_run, tmp_path):
    fam = RegressionFamily(RegressionMixture(d_in=16, n_tasks=4, rank=4, seed=1), n_points=8)
    res = finetune_layers(
        reg_run,
        fam,
        tmp_path / "ft",
        k_layers=1,
        steps=3,
        n_prompts=12,
        which=("last",),
        progress=False,
    )
    row = res.rows[0]
    assert row.accuracy_before is None and row.blocks == [1]
    assert row.loss_after != row.loss_before


def test_finetune_lora_first_k_only_changes_first_k_blocks(token_run, tmp_path):
    fam = TokenFamily(get_suite("latent", n_tasks=2, n_symbols=8, seed=5), k=4)
    res = finetune_layers(
        token_run,
        fam,
        tmp_path / "ft",
        k_layers=1,
        steps=3,
        n_prompts=12,
        which=("first",),
        method="lora",
        lora_rank=4,
        progress=False,
    )
    assert res.config["method"] == "lora" and res.rows[0].blocks == [0]
    base = load_file(str(sorted((token_run / "checkpoints").iterdir())[-1] / "model.safetensors"))
    tuned = load_file(str(tmp_path / "ft" / "first" / "model.safetensors"))
    changed = [n for n, w in base.items() if not torch.equal(w, tuned[n])]
    assert changed and all("h.0." in n for n in changed), changed
    with pytest.raises(TVLensError):
        finetune_layers(token_run, fam, tmp_path / "bad", method="qlora", progress=False)
