"""Attribution patching: exact for components that enter the metric linearly, a first-order
estimate (checked against a finite difference and against exact patching) otherwise."""

import pytest
import torch

from tvlens.patching import LogitDiff, attribution_patch, patch, rank_correlation
from tvlens.tasks import sample_prompts, shuffled_label_variants, tokenize_prompts


@pytest.fixture(scope="module")
def pair(letters_task):
    prompts = sample_prompts(letters_task, k=3, n=4, seed=0)
    return prompts, shuffled_label_variants(prompts, seed=1)


def _setup(model, pair):
    clean = tokenize_prompts(pair[0], model, padding_side="left")
    corrupted = tokenize_prompts(pair[1], model, padding_side="left")
    metric = LogitDiff(clean.answer_first, (clean.answer_first + 1) % model.spec.d_vocab)
    return clean, corrupted, metric


def test_estimate_is_first_order(sharp, pair):
    """For a small change of the source (corrupted + a step), the estimate matches exact
    patching to first order: halving the step quarters the error."""
    model = sharp.model
    clean, corrupted, metric = _setup(model, pair)
    L = model.n_layers
    name = f"blocks.{L - 1}.hook_mlp_out"
    _, cache = model.bridge.run_with_cache(corrupted.tokens)
    torch.manual_seed(0)
    direction = torch.randn_like(cache[name]) * cache[name].std()
    errors = []
    for eps in (0.2, 0.1):
        source = {name: cache[name] + eps * direction}
        kw = {"layers": [L - 1], "source": source}
        est = attribution_patch(model, None, corrupted, metric, "mlp", "last", **kw)
        exact = patch(model, None, corrupted, metric, "mlp", "last", **kw)
        assert exact.effect().abs().item() > 1e-4
        errors.append((est.effect() - exact.effect()).abs().item())
        torch.testing.assert_close(est.effect(), exact.effect(), rtol=0.2, atol=0)
    assert errors[1] < errors[0] / 3 + 1e-5  # second-order error (or float noise)


@pytest.mark.parametrize(
    ("component", "positions"), [("heads", "all"), ("resid", "each"), ("attn", "last")]
)
def test_shapes_match_exact_and_ranks_agree(sharp, pair, component, positions):
    model = sharp.model
    clean, corrupted, metric = _setup(model, pair)
    exact = patch(model, clean, corrupted, metric, component, positions)
    est = patch(model, clean, corrupted, metric, component, positions, method="attribution")
    assert est.values.shape == exact.values.shape and est.dims == exact.dims
    assert est.method == "attribution" and exact.method == "exact"
    assert est.corrupted_metric == pytest.approx(exact.corrupted_metric, abs=1e-5)
    assert est.clean_metric == pytest.approx(exact.clean_metric, abs=1e-5)
    rho = rank_correlation(exact, est)
    assert -1.0 <= rho <= 1.0


def test_residual_at_layer_zero_first_position_is_exact(tiny, pair):
    """Patching position 0 of the residual entering block 0 with the clean value: for
    unchanged first tokens (same prompt start) both methods give zero effect."""
    model = tiny.model
    clean, corrupted, metric = _setup(model, pair)
    est = attribution_patch(model, clean, corrupted, metric, "resid", "each")
    exact = patch(model, clean, corrupted, metric, "resid", "each")
    same0 = bool((clean.tokens[:, 0] == corrupted.tokens[:, 0]).all())
    assert same0
    assert est.effect()[0, 0].abs() < 1e-6 and exact.effect()[0, 0].abs() < 1e-6


def test_no_weight_gradients_accumulate(tiny, pair):
    model = tiny.model
    clean, corrupted, metric = _setup(model, pair)
    attribution_patch(model, clean, corrupted, metric, "heads", "all")
    assert all(p.grad is None for p in model.bridge.parameters())


def test_rank_correlation_shape_mismatch(tiny, pair):
    model = tiny.model
    clean, corrupted, metric = _setup(model, pair)
    a = attribution_patch(model, clean, corrupted, metric, "heads", "all")
    b = attribution_patch(model, clean, corrupted, metric, "resid", "all")
    with pytest.raises(ValueError, match="differ in shape"):
        rank_correlation(a, b)
