"""``tvlens.models.run_from``: a pass started at block ``l`` from that block's input equals the full
pass, on every test architecture (post-norm and sliding-window ones included), with the
earlier blocks skipped where that is exact and run where it is not."""

import torch

from tvlens.models import adapter, run_from
from tvlens.models.resume import cache_prefix, can_skip_blocks, corrupted_run
from tvlens.tasks import tokenize_prompts


def _setup(model, prompts):
    batch = tokenize_prompts(prompts, model, padding_side="left")
    names = [model.resid_hook(layer, "pre") for layer in range(model.n_layers)]
    full, acts, kv = corrupted_run(model, batch.tokens, batch.attention_mask, names)
    return batch.attention_mask, names, full, acts, kv


def test_run_from_equals_the_full_pass(sharp_all, mixed):
    model = sharp_all.model
    mask, names, full, acts, kv = _setup(model, mixed)
    ran = []
    with model.hooks(fwd_hooks=[(model.attn_out_hook(0), lambda x, hook: ran.append(1))]):
        run_from(model, 1, acts[names[1]], mask)
    assert can_skip_blocks(model) and not ran  # block 0 skipped, not run
    for layer in range(model.n_layers):
        with torch.no_grad():
            got = run_from(model, layer, acts[names[layer]], mask)
            # the last 3 positions only, the others from the cache
            tail = run_from(
                model, layer, acts[names[layer]][:, -3:], mask, cache_prefix(kv, -3 % mask.shape[1])
            )  # noqa: E501
        torch.testing.assert_close(got, full, atol=1e-4, rtol=0)
        torch.testing.assert_close(tail, full[:, -3:], atol=1e-4, rtol=0)


def test_blocks_run_where_skipping_them_is_not_exact(sharp_all, mixed, monkeypatch):
    """A model whose blocks share state across layers (e.g. Gemma-3n's shared keys/values)
    gets no skipped blocks: the earlier blocks run, and the result is still the full pass."""
    model = sharp_all.model
    mask, names, full, acts, _ = _setup(model, mixed)
    cfg = adapter.hf_config(model.bridge)
    monkeypatch.setattr(cfg, "num_kv_shared_layers", 1, raising=False)
    assert not can_skip_blocks(model)
    ran = []
    first = model.attn_out_hook(0)  # fires only when block 0's attention runs
    with model.hooks(fwd_hooks=[(first, lambda x, hook: ran.append(1))]), torch.no_grad():
        got = run_from(model, 1, acts[names[1]], mask)
    assert ran  # block 0 ran (it is skipped, and the hook silent, where skipping is exact)
    torch.testing.assert_close(got, full, atol=1e-4, rtol=0)
