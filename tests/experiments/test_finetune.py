"""Fine-tuning as a training-engine run: the engine's checkpoint holds only the tuned blocks,
a second call with the same options reuses the run, other options into the same folder are
refused; only the chosen blocks change (full and LoRA), on both task families."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tvlens.errors import TVLensError
from tvlens.experiments.finetune import TRAINABLE_FILE, finetune_layers
from tvlens.probing.family import RegressionFamily, TokenFamily, family_for_run
from tvlens.runs.checkpoints import list_checkpoints
from tvlens.tasks import get_suite
from tvlens.tasks.regression import RegressionMixture
from tvlens.training import train_synthetic


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "run"
    train_synthetic(out, preset="tiny", device="cpu", progress=False, steps=20)
    return out


def test_finetune_is_an_engine_run_that_a_second_call_reuses(run, tmp_path):
    fam = TokenFamily(get_suite("latent", n_tasks=2, n_symbols=8, seed=5), k=4)
    kw = dict(k_layers=1, steps=3, n_prompts=8, which=("last",), progress=False)
    first = finetune_layers(run, fam, tmp_path / "ft", **kw)
    ckpts = list_checkpoints(tmp_path / "ft" / "training" / "last")
    assert [c.step for c in ckpts] == [3]
    trained = load_file(str(ckpts[-1].path / TRAINABLE_FILE))
    assert trained and all(".h.1." in name for name in trained)  # the last block only
    tuned = load_file(str(tmp_path / "ft" / "last" / "model.safetensors"))
    assert all(torch.equal(w, tuned[name]) for name, w in trained.items())

    again = finetune_layers(run, fam, tmp_path / "ft", **kw)
    assert again.rows[0].loss_after == first.rows[0].loss_after
    rewritten = load_file(str(tmp_path / "ft" / "last" / "model.safetensors"))
    assert all(torch.equal(w, rewritten[name]) for name, w in tuned.items())
    with pytest.raises(TVLensError, match="different configuration"):
        finetune_layers(run, fam, tmp_path / "ft", **{**kw, "steps": 4})


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
    from tvlens.experiments.finetune import FinetuneResult

    assert FinetuneResult.load(tmp_path / "ft" / "metrics.json").to_dict() == res.to_dict()
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
