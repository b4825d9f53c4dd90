"""The regression family's read-in/read-out model through the bridge, and its training run
(checkpoints, metrics, exact resume). The mixture itself: tests/tasks/test_regression_mixture.py."""

from __future__ import annotations

import json

import pytest
import torch

from tvlens.errors import LayerError, TVLensError
from tvlens.injection import inject
from tvlens.models.regression import load_regression_model
from tvlens.tasks.regression import interleave, predictions_at_x
from tvlens.training.regression import (
    build_regression_model,
    get_regression_preset,
    train_regression,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reg") / "run"
    res = train_regression(out, preset="tiny", device="cpu", progress=False)
    return out, res


def test_tiny_training_writes_run_and_reduces_mse(tiny_run):
    out, res = tiny_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["family"] == "regression" and cfg["config"] == res.config.to_dict()
    ck = json.loads((out / "metrics.json").read_text())["checkpoints"]
    assert [c["step"] for c in ck] == [c.step for c in res.checkpoints]
    assert set(ck[-1]["task_loss"]) == {"basis_0", "basis_1", "basis_2", "basis_3"}
    # Training reduces the training loss (mean over the first vs the last logged windows).
    tl = json.loads((out / "metrics.json").read_text())["train_loss"]
    assert tl[-1][1] < tl[0][1]
    for c in res.checkpoints:
        assert (c.path / "read_in.safetensors").is_file()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bridge_computation_equals_hf_with_read_in_and_hooks_see_residual(tmp_path, arch):
    res = train_regression(
        tmp_path / arch, preset="tiny", device="cpu", progress=False, steps=12, arch=arch
    )
    model = load_regression_model(res.run_dir, device="cpu")
    ref = build_regression_model(res.config)  # rebuild, then load the saved weights
    from safetensors.torch import load_file

    last = res.checkpoints[-1].path
    ref.hf.load_state_dict(load_file(str(last / "model.safetensors")), strict=False)
    if hasattr(ref.hf, "tie_weights"):
        ref.hf.tie_weights()
    ref.read_in.load_state_dict(load_file(str(last / "read_in.safetensors")))
    ref.eval()
    x, y, _ = model.mixture.sample(1, n=3, n_points=8, seed=0)
    tokens = interleave(x, y)
    with torch.no_grad():
        direct = ref(tokens)
        bridged = model.predict(tokens)
        hs = ref.hf(inputs_embeds=ref.read_in(tokens), output_hidden_states=True).hidden_states
    assert torch.allclose(direct, bridged, atol=1e-5)
    # Hooks see the residual: entering block 0 and after block 0 (HF applies the final norm
    # to its last hidden state, so compare a middle one).
    tv = model.tvmodel
    _, cache = tv.run_with_cache(model.embed(tokens), start_at_layer=0)
    assert torch.allclose(cache[tv.resid_hook(0, "pre")], hs[0], atol=1e-5)
    assert torch.allclose(cache[tv.resid_hook(0, "post")], hs[1], atol=1e-5)
    # inject works on it: replacing the last position changes only the last prediction.
    with torch.no_grad(), inject(tv, torch.zeros(tv.d_model), layer=0):
        patched = model.predict(tokens)
    assert torch.allclose(patched[:, :-1], bridged[:, :-1], atol=1e-5)
    assert not torch.allclose(patched[:, -1], bridged[:, -1], atol=1e-3)
    with pytest.raises(LayerError):
        tv.resid_hook(5)
    assert predictions_at_x(bridged).shape == (3, 8)


def test_resume_is_bit_identical(tmp_path):
    full = train_regression(tmp_path / "full", preset="tiny", device="cpu", progress=False)
    part = train_regression(
        tmp_path / "part", preset="tiny", device="cpu", progress=False, stop_after=30
    )
    assert not part.completed
    done = train_regression(
        tmp_path / "part", preset="tiny", device="cpu", progress=False, resume=True
    )
    assert done.completed
    from safetensors.torch import load_file

    a = load_file(str(full.checkpoints[-1].path / "model.safetensors"))
    b = load_file(str(done.checkpoints[-1].path / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra = load_file(str(full.checkpoints[-1].path / "read_in.safetensors"))
    rb = load_file(str(done.checkpoints[-1].path / "read_in.safetensors"))
    assert all(torch.equal(ra[k], rb[k]) for k in ra)
    # The same finished run again: returned as it is, nothing trained or rewritten.
    again = train_regression(tmp_path / "full", preset="tiny", device="cpu", progress=False)
    assert again.completed and again.metrics == full.metrics
    assert [c.path for c in again.checkpoints] == [c.path for c in full.checkpoints]
    c = load_file(str(again.checkpoints[-1].path / "model.safetensors"))
    assert all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(TVLensError, match="different configuration"):
        train_regression(tmp_path / "full", preset="tiny", device="cpu", progress=False, seed=3)


def test_presets_and_bad_options():
    paper = get_regression_preset("paper")
    assert (paper.n_layers, paper.n_heads, paper.d_model, paper.batch_size, paper.lr) == (
        12,
        8,
        256,
        128,
        1e-4,
    )
    with pytest.raises(TVLensError):
        get_regression_preset("huge")
    with pytest.raises(TVLensError):
        get_regression_preset("tiny").with_overrides(bogus=1)
