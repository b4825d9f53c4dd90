"""Fine-tuning as a training-engine run: the engine's checkpoint holds only the tuned blocks,
a second call with the same options reuses the run, other options into the same folder are
refused. (Which blocks change, LoRA and the regression family: tests/probing.)"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tvlens.errors import TVLensError
from tvlens.models.checkpoints import list_checkpoints
from tvlens.probing.experiments import TokenFamily
from tvlens.tasks import get_suite
from tvlens.training import train_synthetic
from tvlens.training.finetune import TRAINABLE_FILE, finetune_layers


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
