"""Function vectors: head AIE from last-token patching equals one full forward pass per head;
the vector is the sum of the top heads' mean outputs through W_O."""

import pytest
import torch

from tests.reference import reference_head_aie
from tvlens.extraction import HeadTable, function_vector, head_aie, mean_head_outputs
from tvlens.tasks import sample_prompts, tokenize_prompts
from tvlens.tasks.prompts import shuffled_label_variants


@pytest.fixture(scope="module")
def prompts(letters_task):
    return sample_prompts(letters_task, k=2, n=4, seed=0) + sample_prompts(
        letters_task, k=4, n=4, seed=1
    )


def _last_z(model, batch):
    """hook_z at each row's query position, from run_with_cache: [layer, batch, head, d_head]."""
    names = [model.z_hook(x) for x in range(model.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(
            batch.tokens, attention_mask=batch.attention_mask, names_filter=names
        )
    rows = torch.arange(len(batch))
    return torch.stack([cache[n][rows, batch.query_pos] for n in names])


def _reference_aie(model, corrupted, head_means):
    """One head at a time, full forward passes (tests/reference.py)."""
    return reference_head_aie(model, corrupted, head_means)


def test_mean_head_outputs_equal_cache(sharp, prompts):
    model = sharp.model
    for side in ("left", "right"):
        batch = tokenize_prompts(prompts, model, padding_side=side)
        means = mean_head_outputs(model, batch)
        assert means.shape == (model.n_layers, model.n_heads, model.d_head)
        torch.testing.assert_close(means, _last_z(model, batch).mean(1), atol=1e-6, rtol=0)


def test_head_aie_equals_one_head_at_a_time(sharp, prompts):
    model = sharp.model
    corrupted = tokenize_prompts(shuffled_label_variants(prompts, seed=1), model)
    clean = tokenize_prompts(prompts, model)
    g = torch.Generator().manual_seed(0)
    real = mean_head_outputs(model, clean)
    # Large random means move probabilities by ~1e-2: the 1e-5 tolerance is meaningful.
    big = torch.randn(real.shape, generator=g) * 2.0
    for means in (real, big):
        ref = _reference_aie(model, corrupted, means)
        got = head_aie(model, corrupted, means)
        assert got.shape == (model.n_layers, model.n_heads)
        assert (got - ref).abs().max() <= 1e-5
        # Chunked: 3 heads per pass (chunks straddle layers), and 1 head per pass.
        for max_batch in (3 * len(corrupted), 1):
            chunked = head_aie(model, corrupted, means, max_batch=max_batch)
            assert (chunked - ref).abs().max() <= 1e-5
    assert ref.abs().max() > 5e-3 and ref.std() > 1e-3


def test_head_outputs_sum_to_attention_output(sharp, prompts):
    """sum_h z_h @ W_O[h] + b_O is the attention output: W_O is split by head correctly."""
    model = sharp.model
    batch = tokenize_prompts(prompts, model, padding_side="right")
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
        for layer in range(model.n_layers):
            z = cache[model.z_hook(layer)]
            W = model.W_O(layer)
            assert W.shape == (model.n_heads, model.d_head, model.d_model)
            by_head = torch.einsum("bphe,hed->bphd", z, W)
            torch.testing.assert_close(model.head_outputs(z, layer), by_head, atol=1e-5, rtol=0)
            out = by_head.sum(2) + model.b_O(layer)
            torch.testing.assert_close(out, cache[model.attn_out_hook(layer)], atol=1e-4, rtol=0)


def test_function_vector_is_sum_of_top_heads(sharp, letters_task):
    model = sharp.model
    n, k, top_k = 8, 2, 3
    tv, table = function_vector(model, letters_task, k=k, n_prompts=n, top_k_heads=top_k, seed=0)

    # Independently: the same prompts and corruptions, z from run_with_cache, W_O per layer.
    prompts = sample_prompts(letters_task, k, n, seed=0, template="arrow")
    clean = tokenize_prompts(prompts, model, padding_side="left")
    corrupted = tokenize_prompts(shuffled_label_variants(prompts, seed=1), model)
    means = _last_z(model, clean).mean(1)
    torch.testing.assert_close(
        table.aie, _reference_aie(model, corrupted, means), atol=1e-5, rtol=0
    )

    top = table.top(top_k)
    ref = sum(means[layer, head] @ model.W_O(layer)[head] for layer, head in top)
    assert tv.vectors.shape == (1, model.d_model)
    torch.testing.assert_close(tv.vectors[0], ref.detach(), atol=1e-5, rtol=0)
    assert tv.info["heads"] == [list(x) for x in top]
    assert tv.layers == (model.n_layers // 3,)
    assert (tv.method, tv.task, tv.n_prompts) == ("fv", letters_task.name, n)
    assert table.task == letters_task.name


def test_function_vectors_on_sliding_window_models(sharp_sliding, prompts, letters_task):
    """Gemma-2 and Mistral with a window (6) shorter than the prompts (11 and 19 tokens): head
    AIE equals one full forward pass per head, and the function vector is the sum of its top
    heads (this crashed with "resume_packed needs a cache of ... positions")."""
    test_head_aie_equals_one_head_at_a_time(sharp_sliding, prompts)
    test_function_vector_is_sum_of_top_heads(sharp_sliding, letters_task)


def test_head_table_ranking_known_answer():
    table = HeadTable(torch.tensor([[0.1, 0.5, -0.3], [0.3, -0.2, 0.0]]), "t")
    ranked = table.ranked()
    assert [(layer, head) for layer, head, _ in ranked] == [
        (0, 1),
        (1, 0),
        (0, 0),
        (1, 2),
        (1, 1),
        (0, 2),
    ]
    assert [v for _, _, v in ranked] == pytest.approx([0.5, 0.3, 0.1, 0.0, -0.2, -0.3])
    assert table.top(2) == [(0, 1), (1, 0)]
    rows = table.to_rows()
    assert [r["rank"] for r in rows] == list(range(1, 7))
    assert (rows[0]["layer"], rows[0]["head"]) == (0, 1)


def test_head_table_ranking_property(sharp, prompts):
    model = sharp.model
    corrupted = tokenize_prompts(shuffled_label_variants(prompts, seed=1), model)
    aie = head_aie(model, corrupted, mean_head_outputs(model, tokenize_prompts(prompts, model)))
    table = HeadTable(aie, "letters")
    ranked = table.ranked()
    values = [v for _, _, v in ranked]
    assert values == sorted(values, reverse=True)
    assert sorted((layer, head) for layer, head, _ in ranked) == [
        (layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)
    ]
    assert all(v == pytest.approx(float(aie[layer, head])) for layer, head, v in ranked)
    for k in (1, 5):
        top = set(table.top(k))
        assert len(top) == k
        rest = [float(aie[x]) for x in ((a, b) for a, b, _ in ranked) if x not in top]
        assert min(float(aie[x]) for x in top) >= max(rest)


def test_function_vector_and_its_method_read_one_default():
    """function_vector()'s k and top_k_heads defaults come from tvlens.extraction.defaults,
    and FunctionVector's option default is read from there too (issue 30: the number is
    written once, in tvlens.extraction.defaults)."""
    import inspect

    from tvlens.extraction.defaults import FV_K, FV_TOP_K_HEADS
    from tvlens.extraction.methods import FunctionVector

    params = inspect.signature(function_vector).parameters
    assert params["k"].default == FV_K == 10  # Todd et al. 2024's 10-shot prompts
    assert params["top_k_heads"].default == FV_TOP_K_HEADS == FunctionVector.top_k_heads == 10
