"""Residual vectors at the query position equal run_with_cache, under either padding side."""

import pytest
import torch

from tvlens.errors import LayerError
from tvlens.extraction import (
    activations_at_positions,
    hendel_task_vector,
    per_query_vectors,
    residual_at_query,
)
from tvlens.tasks import sample_prompts, tokenize_prompts


@pytest.fixture(scope="module")
def prompts(letters_task):
    """0-, 2- and 4-shot prompts: three lengths."""
    return (
        sample_prompts(letters_task, k=0, n=2, seed=0)
        + sample_prompts(letters_task, k=2, n=3, seed=1)
        + sample_prompts(letters_task, k=4, n=2, seed=2)
    )


def _cached_resid(model, batch, where="post"):
    """[layer, batch, d_model] at each row's query position, from run_with_cache."""
    names = [f"blocks.{x}.hook_resid_{where}" for x in range(model.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(
            batch.tokens, attention_mask=batch.attention_mask, names_filter=names
        )
    rows = torch.arange(len(batch))
    return torch.stack([cache[n][rows, batch.query_pos] for n in names])


@pytest.mark.parametrize("side", ["left", "right"])
def test_residual_at_query_equals_cache(tiny, prompts, side):
    model = tiny.model
    batch = tokenize_prompts(prompts, model, padding_side=side)
    assert len(set(batch.query_pos.tolist())) == (1 if side == "left" else 3)
    ref = _cached_resid(model, batch)
    got = residual_at_query(model, batch)
    assert got.shape == (model.n_layers, len(batch), model.d_model)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    # In chunks of 2 prompts, and for a subset of layers (negative index included).
    torch.testing.assert_close(
        residual_at_query(model, batch, batch_size=2), ref, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        residual_at_query(model, batch, layers=[-1, 0]), ref[[2, 0]], atol=1e-5, rtol=0
    )
    # The residual entering block l+1 is the one leaving block l.
    pre = residual_at_query(model, batch, layers=[1, 2], where="pre")
    torch.testing.assert_close(pre, ref[[0, 1]], atol=1e-6, rtol=0)


def test_query_vectors_do_not_depend_on_padding(tiny, prompts):
    model = tiny.model
    left = residual_at_query(model, tokenize_prompts(prompts, model, padding_side="left"))
    right = residual_at_query(model, tokenize_prompts(prompts, model, padding_side="right"))
    torch.testing.assert_close(left, right, atol=1e-5, rtol=0)


def test_early_layers_stop_the_pass(tiny, prompts):
    """Only layer-0 hooks: the pass stops after block 0 (later blocks never run), same values."""
    model = tiny.model
    batch = tokenize_prompts(prompts, model, padding_side="right")
    ref = _cached_resid(model, batch)
    ran = []
    late = (model.resid_hook(model.n_layers - 1), lambda a, hook: ran.append(1))
    names = [model.resid_hook(0), model.z_hook(0)]
    with model.hooks(fwd_hooks=[late]):
        acts = activations_at_positions(model, batch, names)
    assert ran == []
    assert list(acts) == names
    torch.testing.assert_close(acts[model.resid_hook(0)], ref[0], atol=1e-5, rtol=0)
    # Explicit positions: one before each query.
    before = activations_at_positions(
        model, batch, [model.resid_hook(1)], positions=batch.query_pos - 1
    )[model.resid_hook(1)]
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
    rows = torch.arange(len(batch))
    ref_before = cache[model.resid_hook(1)][rows, batch.query_pos - 1]
    torch.testing.assert_close(before, ref_before, atol=1e-5, rtol=0)


def test_bad_layer_raises(tiny, prompts):
    batch = tokenize_prompts(prompts, tiny.model)
    with pytest.raises(LayerError, match="out of range"):
        residual_at_query(tiny.model, batch, layers=[tiny.model.n_layers])


def test_hendel_vector_is_mean_of_per_query_vectors(tiny, letters_task):
    model = tiny.model
    acts, qprompts = per_query_vectors(model, letters_task, k=3, n_prompts=6, seed=4)
    assert acts.shape == (model.n_layers, 6, model.d_model)
    assert len(qprompts) == 6 and all(p.k == 3 for p in qprompts)
    ref = _cached_resid(model, tokenize_prompts(qprompts, model, padding_side="right"))
    torch.testing.assert_close(acts, ref, atol=1e-5, rtol=0)

    tv = hendel_task_vector(model, letters_task, k=3, n_prompts=6, seed=4)
    torch.testing.assert_close(tv.vectors, acts.mean(1), atol=1e-6, rtol=0)
    assert tv.layers == tuple(range(model.n_layers))
    assert (tv.method, tv.task, tv.n_prompts, tv.model_name) == (
        "hendel",
        letters_task.name,
        6,
        model.name,
    )
    some = hendel_task_vector(model, letters_task, k=3, n_prompts=6, seed=4, layers=[-1, 1])
    assert some.layers == (model.n_layers - 1, 1)
    torch.testing.assert_close(some.at(1), tv.at(1), atol=1e-6, rtol=0)
