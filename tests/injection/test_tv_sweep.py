"""Layer sweeps from one prefix run equal one full forward pass per layer with inject()."""

import pytest
import torch

from tests.reference import reference_layer_sweep
from tvlens.injection import layer_sweep_correct, layer_sweep_logits
from tvlens.tasks import sample_prompts, tokenize_prompts


@pytest.fixture(scope="module")
def prompts(letters_task):
    """Zero-shot and 2-shot prompts (two lengths under left padding)."""
    return sample_prompts(letters_task, k=0, n=3, seed=0) + sample_prompts(
        letters_task, k=2, n=2, seed=1
    )


def _reference(model, prompts, vectors, layers, mode, scale):
    batch = tokenize_prompts(prompts, model, padding_side="left")
    return reference_layer_sweep(model, batch, vectors, layers, mode, scale)


@pytest.mark.parametrize(("mode", "scale"), [("replace", 1.0), ("add", 2.0)])
def test_sweep_equals_full_forward_per_layer(sharp, prompts, mode, scale):
    model = sharp.model
    layers = list(range(model.n_layers))
    vectors = torch.randn(len(layers), model.d_model, generator=torch.Generator().manual_seed(0))
    got = layer_sweep_logits(model, prompts, vectors, layers, mode=mode, scale=scale)
    assert got.shape == (len(prompts), len(layers), model.spec.d_vocab)
    ref = _reference(model, prompts, vectors, layers, mode, scale)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    # Non-vacuous: the layers give different logits.
    assert (ref[:, 0] - ref[:, -1]).abs().max() > 1e-2


def test_sweep_any_layer_order_and_chunks(sharp, prompts):
    """Repeated layers in any order, one copy per pass (max_batch = batch size)."""
    model = sharp.model
    layers = [2, 0, 2, -1]
    vectors = torch.randn(4, model.d_model, generator=torch.Generator().manual_seed(1))
    ref = _reference(model, prompts, vectors, layers, "add", 0.5)
    for max_batch in (len(prompts), 2 * len(prompts), 1024):
        got = layer_sweep_logits(
            model, prompts, vectors, layers, mode="add", scale=0.5, max_batch=max_batch
        )
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_sweep_correct_is_argmax_of_logits(sharp, prompts):
    model = sharp.model
    vectors = torch.randn(3, model.d_model, generator=torch.Generator().manual_seed(2)) * 5
    logits = layer_sweep_logits(model, prompts, vectors, [0, 1, 2])
    correct = layer_sweep_correct(model, prompts, vectors, [0, 1, 2])
    answers = tokenize_prompts(prompts, model).answer_first
    assert correct.dtype == torch.bool and correct.shape == (len(prompts), 3)
    assert torch.equal(correct, logits.argmax(-1) == answers[:, None])


def test_sweep_bad_arguments(tiny, prompts):
    model = tiny.model
    with pytest.raises(ValueError, match="2 vectors for 3 layers"):
        layer_sweep_logits(model, prompts, torch.zeros(2, model.d_model), [0, 1, 2])
    with pytest.raises(ValueError, match="size 31"):
        layer_sweep_logits(model, prompts, torch.zeros(1, 31), [0])
