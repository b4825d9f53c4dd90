"""The sparse-linear-regression mixture, its read-in/read-out model through the bridge, and
its training run (checkpoints, metrics, exact resume)."""

from __future__ import annotations

import json

import pytest
import torch

from tvlens.errors import EmptyTaskError, LayerError, TVLensError
from tvlens.injection import inject
from tvlens.models.regression import load_regression_model
from tvlens.tasks.regression import (
    MIXTURES,
    RegressionMixture,
    interleave,
    predictions_at_x,
    query_tokens,
)
from tvlens.training.regression import (
    build_regression_model,
    get_regression_preset,
    train_regression,
)


@pytest.mark.parametrize("name", ["orthogonal4", "orthogonal6"])
def test_orthogonal_bases_are_orthonormal_and_mutually_orthogonal(name):
    mix = MIXTURES[name]
    B = mix.bases()  # [task, d_in, rank]
    assert B.shape == (mix.n_tasks, mix.d_in, 4)
    flat = torch.cat(list(B), dim=1)  # all directions side by side
    assert torch.allclose(flat.T @ flat, torch.eye(flat.shape[1]), atol=1e-5)


def test_overlapping_bases_share_directions_with_neighbours():
    mix = MIXTURES["overlapping8"]
    assert (mix.d_in, mix.n_tasks) == (16, 8)
    B = mix.bases()
    for t in range(8):
        assert torch.allclose(B[t].T @ B[t], torch.eye(4), atol=1e-5)
        # Principal angles: singular values of B_t^T B_u are cosines; 1 = shared direction.
        s_next = torch.linalg.svdvals(B[t].T @ B[(t + 1) % 8])
        s_far = torch.linalg.svdvals(B[t].T @ B[(t + 4) % 8])
        assert (s_next > 1 - 1e-5).sum() == 2
        assert s_far.max() < 1e-5


def test_noise_free_y_is_exactly_linear_with_w_in_the_basis_span():
    mix = RegressionMixture(d_in=16, n_tasks=4, rank=4, noise_std=0.0)
    x, y, w = mix.sample(2, n=5, n_points=7, seed=3)
    assert torch.allclose(y, torch.einsum("npd,nd->np", x, w), atol=1e-5)
    B = mix.bases()[2]
    assert torch.allclose(w, w @ B @ B.T, atol=1e-5)  # w = B B^T w: in span(B_2)
    for other in (0, 1, 3):
        assert (w @ mix.bases()[other]).abs().max() < 1e-4  # orthogonal to other bases


def test_null_task_is_independent_of_x_and_bad_tasks_raise():
    mix = MIXTURES["orthogonal4"]
    x, y, w = mix.sample("null", n=2000, n_points=2, seed=0)
    assert w.abs().max() == 0
    assert abs(torch.corrcoef(torch.stack([x[:, 0, 0], y[:, 0]]))[0, 1]) < 0.1
    with pytest.raises(EmptyTaskError):
        mix.sample("basis_9", n=1, n_points=2, seed=0)
    with pytest.raises(EmptyTaskError):
        mix.sample(0, n=0, n_points=2, seed=0)
    with pytest.raises(TVLensError):
        RegressionMixture(d_in=8, n_tasks=4, rank=4)


def test_sequence_layout_interleaves_x_and_embedded_y():
    x = torch.arange(2 * 3 * 4, dtype=torch.float).reshape(2, 3, 4)
    y = torch.tensor([[10.0, 11, 12], [20, 21, 22]])
    seq = interleave(x, y)
    assert seq.shape == (2, 6, 4)
    assert torch.equal(seq[:, 0::2], x)
    assert torch.equal(seq[:, 1::2, 0], y) and seq[:, 1::2, 1:].abs().max() == 0
    assert torch.equal(query_tokens(x, y)[:, -1], x[:, -1])


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
    with pytest.raises(TVLensError):  # a second run into the same folder needs resume
        train_regression(tmp_path / "full", preset="tiny", device="cpu", progress=False)


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
