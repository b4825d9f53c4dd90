"""Every shortcut of exact patching rests on an assumption about the loaded model; these tests
check each assumption directly, on every test architecture (post-norm and sliding-window ones
included), and check that the shortcut is refused where its assumption fails."""

import copy

import pytest
import torch
from transformers import cache_utils

import tvlens.patching.exact as ex
from tvlens.models import adapter
from tvlens.models.hf import POST_NORM_ARCHITECTURES, SLIDING_WINDOW_ARCHITECTURES
from tvlens.models.resume import (
    attn_out_is_slot_output,
    cache_prefix,
    can_pack,
    can_skip_blocks,
    corrupted_run,
    last_position_mlp,
    resume,
)
from tvlens.patching import LogitDiff, patch
from tvlens.patching.attn_shortcut import linear_heads
from tvlens.tasks import shuffled_label_variants, tokenize_prompts

POST_NORM, SLIDING = POST_NORM_ARCHITECTURES, SLIDING_WINDOW_ARCHITECTURES


def test_head_outputs_reach_the_attention_module_linearly(sharp_all, mixed):
    """The head shortcut's assumption, on a full pass: changing one head's ``z`` changes the
    attention module's output by ``(z' - z) @ W_O``. ``hook_attn_out`` moves that way only on
    pre-norm blocks (on Gemma-2 / OLMo-2 it is after a norm: adding the difference there was
    the bug), and tvlens's checks say which is which."""
    model = sharp_all.model
    batch = tokenize_prompts(mixed, model, padding_side="left")
    post_norm = sharp_all.arch in POST_NORM
    new_z = torch.randn(model.d_head, generator=torch.Generator().manual_seed(0))
    for layer in range(model.n_layers):
        names = [model.z_hook(layer), model.attn_module_hook(layer), model.attn_out_hook(layer)]
        _, base, _ = corrupted_run(model, batch.tokens, batch.attention_mask, names, False)

        def set_head(z, hook):
            z = z.clone()
            z[:, :, 1] = new_z
            return z

        with model.hooks(fwd_hooks=[(names[0], set_head)]):
            _, patched, _ = corrupted_run(model, batch.tokens, batch.attention_mask, names, False)
        shift = (patched[names[0]] - base[names[0]])[:, :, 1] @ model.W_O(layer)[1]
        torch.testing.assert_close(patched[names[1]], base[names[1]] + shift, atol=1e-4, rtol=1e-4)
        attn_out_linear = torch.allclose(
            patched[names[2]], base[names[2]] + shift, atol=1e-4, rtol=1e-4
        )
        assert attn_out_linear is not post_norm
        assert attn_out_is_slot_output(model, layer) is not post_norm
        assert linear_heads(model, layer, base[names[0]], base[names[1]])
        assert linear_heads(model, layer, base[names[0]], base[names[2]]) is not post_norm


def test_patch_reports_the_shortcuts_it_took(sharp_all, mixed):
    model = sharp_all.model
    prompts = sample_prompts_equal(mixed)
    clean = tokenize_prompts(prompts, model)
    corrupted = tokenize_prompts(shuffled_label_variants(prompts, seed=1), model)
    metric = LogitDiff(clean.answer_first, (clean.answer_first + 1) % model.spec.d_vocab)
    heads = patch(model, clean, corrupted, metric, "heads", "each", layers=[1])
    attn = patch(model, clean, corrupted, metric, "attn", "each", layers=[1])
    last = patch(model, clean, corrupted, metric, "heads", "last", layers=[1])
    assert heads.info["fast_paths"]["skip_attention"]  # the module output is linear in z
    assert heads.info["fast_paths"]["cached_prefix"]  # every position from a cut cache
    assert attn.info["fast_paths"]["skip_attention"] is (sharp_all.arch not in POST_NORM)
    # 15-token prompts: longer than the window of the sliding-window models.
    assert last.info["fast_paths"]["packed"] is (sharp_all.arch not in SLIDING)


def sample_prompts_equal(mixed):
    """The two 2-shot prompts (equal lengths: no padding)."""
    return mixed[:2]


def test_resume_with_skipped_blocks_and_cut_cache_equals_a_full_pass(sharp_all, mixed):
    """Blocks below ``layer`` skipped, positions below ``p`` from the corrupted run's cache
    (cut exactly, also where a sliding window has moved past them), the final MLP trimmed to
    the last position: each equals the full forward pass."""
    model = sharp_all.model
    assert can_skip_blocks(model)
    batch = tokenize_prompts(mixed, model, padding_side="left")
    mask, T = batch.attention_mask, batch.tokens.shape[1]
    names = [model.resid_hook(layer, "pre") for layer in range(model.n_layers)]
    full, acts, kv = corrupted_run(model, batch.tokens, mask, names)
    for layer in range(model.n_layers):
        for p in (0, 3, T - 1):
            past = cache_prefix(kv, p) if p else None
            got = resume(model, acts[names[layer]][:, p:], layer, mask, past)
            torch.testing.assert_close(got, full[:, p:], atol=1e-4, rtol=0)
    with last_position_mlp(model) as trimmed, torch.no_grad():
        last = model(batch.tokens, attention_mask=mask)[:, -1]
    assert trimmed
    torch.testing.assert_close(last, full[:, -1], atol=1e-4, rtol=0)


def test_sliding_window_cache_layers_are_cut_exactly_or_refused(sharp_sliding, mixed):
    """The model's own cache (sliding layers keep only the last ``window - 1`` positions and
    count all of them) is cut exactly while it holds what the cut needs, and refused with
    :class:`CacheCutError` once it has dropped it; the cut cache has the length it reports."""
    model = sharp_sliding.model
    window = sharp_sliding.built["sliding_window"]
    for n, cuttable in ((window - 1, range(1, window)), (14, [14])):
        tokens = (torch.arange(n) % 8 + 7)[None]
        with torch.no_grad():
            full, cache = model.bridge(tokens, return_type="logits_and_cache")
        kinds = {type(x).__name__ for x in adapter.cache_layers(cache)}
        assert "DynamicSlidingWindowLayer" in kinds
        for p in range(1, n + 1):
            if p not in cuttable:
                with pytest.raises(adapter.CacheCutError, match="dropped positions"):
                    cache_prefix(cache, p)
                continue
            cut = cache_prefix(cache, p, copies=2)
            assert cut.get_seq_length() == p and cache.get_seq_length() == n
            if p < n:
                with torch.no_grad():
                    got = model.bridge(tokens[:, p:].repeat(2, 1), past_key_values=cut)
                torch.testing.assert_close(got, full[:, p:].repeat(2, 1, 1), atol=1e-4, rtol=0)
    other = copy.copy(cache)
    other.layers = [*cache.layers[:1], cache_utils.StaticLayer(max_cache_len=8)]
    with pytest.raises(adapter.CacheCutError, match="StaticLayer"):
        adapter.cut_cache(other, n)


def test_packing_is_refused_where_the_window_bites(sharp_all):
    model = sharp_all.model
    window = sharp_all.built.get("sliding_window")
    assert can_pack(model, 1000) is (window is None)
    if window is not None:
        assert can_pack(model, window) and not can_pack(model, window + 1)
        assert not can_pack(model)  # unknown prompt length


@pytest.mark.parametrize("fallback", ["cut", "skip_blocks", "linear_heads"])
def test_fallbacks_equal_the_fast_paths(sharp_extra, mixed, monkeypatch, fallback):
    """Where a check refuses a shortcut, the general path gives the same numbers."""
    model = sharp_extra.model
    prompts = sample_prompts_equal(mixed)
    clean = tokenize_prompts(prompts, model)
    corrupted = tokenize_prompts(shuffled_label_variants(prompts, seed=1), model)
    metric = LogitDiff(clean.answer_first, (clean.answer_first + 1) % model.spec.d_vocab)
    fast = patch(model, clean, corrupted, metric, "heads", "each", layers=[0, 2])
    if fallback == "cut":
        monkeypatch.setattr(adapter, "can_cut", lambda cache, p: False)
    elif fallback == "skip_blocks":
        monkeypatch.setattr(ex, "can_skip_blocks", lambda model: False)
    else:
        monkeypatch.setattr(ex, "linear_heads", lambda *a: False)
    slow = patch(model, clean, corrupted, metric, "heads", "each", layers=[0, 2])
    taken = {"cut": "cached_prefix", "skip_blocks": "skip_blocks", "linear_heads": "skip_attention"}
    assert fast.info["fast_paths"][taken[fallback]] and not slow.info["fast_paths"][taken[fallback]]
    torch.testing.assert_close(slow.values, fast.values, atol=1e-5, rtol=0)
    assert fast.effect().abs().max() > 1e-2


def test_packing_on_a_sliding_window_model_within_its_window(sharp_sliding, monkeypatch):
    """Prompts no longer than the window: copies are packed (one 4D mask serves every layer),
    and equal the unpacked path and one full pass per head."""
    model = sharp_sliding.model
    window = sharp_sliding.built["sliding_window"]
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(7, 17, (3, window), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] - 7 + 1) % 10 + 7
    answers = torch.tensor([7, 8, 9])
    metric = LogitDiff(answers, answers + 1)
    packed = patch(model, clean, corrupted, metric, "heads", "last")
    assert packed.info["fast_paths"]["packed"]
    monkeypatch.setattr(ex, "can_pack", lambda model, n_pos=None: False)
    unpacked = patch(model, clean, corrupted, metric, "heads", "last")
    assert not unpacked.info["fast_paths"]["packed"]
    torch.testing.assert_close(packed.values, unpacked.values, atol=1e-5, rtol=0)
    _, cache = model.bridge.run_with_cache(clean)
    for layer in range(model.n_layers):
        name = model.z_hook(layer)
        for head in range(model.n_heads):

            def fn(z, hook, name=name, head=head):
                z = z.clone()
                z[:, -1, head] = cache[name][:, -1, head]
                return z

            with torch.no_grad():
                ref = metric(model.bridge.run_with_hooks(corrupted, fwd_hooks=[(name, fn)]))
            assert abs(float(packed.values[layer, head]) - float(ref)) < 1e-5
    assert packed.effect().abs().max() > 1e-3
