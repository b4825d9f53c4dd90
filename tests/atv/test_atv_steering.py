"""steer(): λ = 0 is exactly the frozen target; gradients reach the generator and not the
target; hooks are gone after an error; a row's logits do not depend on the padding side or its
batch neighbours; ``last`` only writes each row's last real token."""

import pytest
import torch

from tvlens.atv.generator import last_real_position, pool_hidden
from tvlens.atv.model import ATV
from tvlens.atv.steering import steer, steering_weights
from tvlens.errors import TVLensError
from tvlens.tasks import Task, sample_prompts, tokenize_prompts

# Queries of different lengths, so that batches are padded.
TASK = Task.from_pairs(
    "mix", [("a", "b"), ("c d", "e"), ("e f g", "h"), ("x", "y"), ("a b c d", "f"), ("h", "g")]
)


@pytest.fixture(scope="module")
def prompts():
    return sample_prompts(TASK, k=0, n=6, seed=0)


def _vectors(model, n, seed=0, layers=None):
    n_layers = model.n_layers if layers is None else len(layers)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_layers, model.d_model, generator=g)


def _hooks_left(model) -> set[str]:
    return {hp.name for hp in model.bridge.hook_dict.values() if hp.fwd_hooks or hp._forward_hooks}


def test_scale_zero_is_exactly_the_target(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model, padding_side="left")
    with torch.no_grad():
        clean = model(batch.tokens, attention_mask=batch.attention_mask)
        with steer(model, _vectors(model, len(batch)), range(model.n_layers),
                   batch.attention_mask, scale=0.0):  # fmt: skip
            got = model(batch.tokens, attention_mask=batch.attention_mask)
        with steer(model, _vectors(model, len(batch)), range(model.n_layers),
                   batch.attention_mask, scale=1.0):  # fmt: skip
            moved = model(batch.tokens, attention_mask=batch.attention_mask)
    assert torch.equal(got, clean)
    assert not torch.allclose(moved, clean)  # the same call with λ = 1 does something


@pytest.mark.parametrize("positions", ["all", "last"])
def test_row_independent_of_padding_side_and_neighbours(tiny, prompts, positions):
    """Each row alone (no padding) against the batch padded left and right: same logits at
    every real position."""
    model = tiny.model
    vecs = _vectors(model, len(prompts), seed=1)
    layers = [0, model.n_layers - 1]
    vecs = vecs[:, : len(layers)]
    alone = []
    with torch.no_grad():
        for i, p in enumerate(prompts):
            b = tokenize_prompts([p], model)
            with steer(model, vecs[i : i + 1], layers, b.attention_mask, positions, scale=2.0):
                alone.append(model(b.tokens, attention_mask=b.attention_mask)[0])
        for side in ("left", "right"):
            b = tokenize_prompts(prompts, model, padding_side=side)
            with steer(model, vecs, layers, b.attention_mask, positions, scale=2.0):
                logits = model(b.tokens, attention_mask=b.attention_mask)
            for i, ref in enumerate(alone):
                real = b.attention_mask[i].bool()
                torch.testing.assert_close(logits[i, real], ref, atol=2e-5, rtol=1e-5)


def test_last_writes_only_the_last_real_token(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model, padding_side="right")
    with torch.no_grad():
        clean = model(batch.tokens, attention_mask=batch.attention_mask)
        vecs = _vectors(model, len(batch), seed=2)
        with steer(model, vecs, range(model.n_layers), batch.attention_mask, "last", scale=3.0):
            got = model(batch.tokens, attention_mask=batch.attention_mask)
    last = last_real_position(batch.attention_mask)
    assert torch.equal(last, batch.query_pos)
    for i in range(len(batch)):
        q = int(last[i])
        assert torch.equal(got[i, :q], clean[i, :q])  # causal: earlier positions untouched
        assert not torch.allclose(got[i, q], clean[i, q])


def test_weights_skip_pads():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    assert torch.equal(steering_weights(mask, "all"), mask.float())
    assert torch.equal(
        steering_weights(mask, "last"), torch.tensor([[0, 0, 0, 1.0], [0, 0, 1.0, 0]])
    )
    h = torch.arange(16.0).view(2, 4, 2)
    assert torch.equal(pool_hidden(h, mask, "last"), torch.stack([h[0, 3], h[1, 2]]))
    assert torch.equal(
        pool_hidden(h, mask, "mean"), torch.stack([h[0, 2:].mean(0), h[1, :3].mean(0)])
    )


def test_hooks_removed_after_error_mid_batch(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model)
    before = _hooks_left(model)
    vecs = _vectors(model, len(batch))
    # An error inside the hooked forward (the vectors were made for another batch size) ...
    with pytest.raises(TVLensError, match="batch of"):
        with steer(model, vecs[:2], range(model.n_layers), batch.attention_mask[:2]):
            model(batch.tokens, attention_mask=batch.attention_mask)
    assert _hooks_left(model) == before
    # ... and one in the body after a steered forward.
    with pytest.raises(RuntimeError, match="boom"):
        with steer(model, vecs, range(model.n_layers), batch.attention_mask):
            model(batch.tokens, attention_mask=batch.attention_mask)
            assert _hooks_left(model) != before
            raise RuntimeError("boom")
    assert _hooks_left(model) == before


def test_bad_vectors_and_layers_refused(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model)
    with pytest.raises(TVLensError, match="Steering vectors have shape"):
        with steer(model, _vectors(model, len(batch))[:, :1], [0, 1], batch.attention_mask):
            pass
    with pytest.raises(TVLensError, match="repeat"):
        with steer(model, _vectors(model, len(batch))[:, :2], [1, 1], batch.attention_mask):
            pass


def test_gradients_reach_generator_not_target(make_tiny, letters_tokenizer, tiny, prompts):
    target = tiny.model
    gen = make_tiny("atv-gen-gpt2", "gpt2", letters_tokenizer, n_layers=2, d_model=16).model
    atv = ATV.build(target, gen, scale=1.0)
    batch = atv.batch(prompts)
    atv.loss(batch).backward()
    gen_grads = [p.grad for p in atv.generator.parameters() if p.requires_grad]
    assert gen_grads and all(g is not None for g in gen_grads)
    assert atv.generator.expansion.weight.grad.abs().sum() > 0
    assert all(g.abs().sum() > 0 for g in gen_grads[:3])  # the LM's own weights too
    assert all(p.grad is None and not p.requires_grad for p in target.bridge.parameters())
    atv.generator.zero_grad(set_to_none=True)
