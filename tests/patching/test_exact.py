"""Exact patching equals TransformerLens's ``patching`` module (one full forward pass per
component) on the same tiny models and inputs, to 1e-5 in float32."""

import pytest
import torch
from transformer_lens import patching as tl_patching

from tvlens.errors import LayerError, PromptError
from tvlens.patching import AnswerProb, LogitDiff, patch
from tvlens.tasks import sample_prompts, shuffled_label_variants, tokenize_prompts

ATOL = 1e-5


# The whole suite also runs on the post-norm (Gemma-2, OLMo-2) and sliding-window (Gemma-2,
# Mistral; window shorter than the prompts) architectures.
@pytest.fixture
def sharp(sharp_all):
    return sharp_all


@pytest.fixture
def tiny(tiny_all):
    return tiny_all


@pytest.fixture(scope="module")
def pair(letters_task):
    """Clean 3-shot prompts and the same prompts with shuffled labels: equal token lengths."""
    prompts = sample_prompts(letters_task, k=3, n=4, seed=0)
    return prompts, shuffled_label_variants(prompts, seed=1)


def _batches(model, pair, side="left"):
    clean = tokenize_prompts(pair[0], model, padding_side=side)
    corrupted = tokenize_prompts(pair[1], model, padding_side=side)
    return clean, corrupted


def _logit_diff(model, clean):
    """Answer logit minus the logit of another token (shuffled labels keep the answer)."""
    return LogitDiff(clean.answer_first, (clean.answer_first + 1) % model.spec.d_vocab)


def _tl(fn, model, clean, corrupted, metric):
    _, cache = model.bridge.run_with_cache(clean.tokens)
    with torch.no_grad():
        return fn(model.bridge, corrupted.tokens, cache, metric).cpu()


TL_CASES = [
    ("resid", "each", "z", tl_patching.get_act_patch_resid_pre),
    ("attn", "each", "z", tl_patching.get_act_patch_attn_out),
    ("mlp", "each", "z", tl_patching.get_act_patch_mlp_out),
    ("heads", "all", "z", tl_patching.get_act_patch_attn_head_out_all_pos),
    ("heads", "each", "z", tl_patching.get_act_patch_attn_head_out_by_pos),
    ("heads", "all", "q", tl_patching.get_act_patch_attn_head_q_all_pos),
    ("heads", "all", "k", tl_patching.get_act_patch_attn_head_k_all_pos),
    ("heads", "all", "v", tl_patching.get_act_patch_attn_head_v_all_pos),
    ("heads", "each", "v", tl_patching.get_act_patch_attn_head_v_by_pos),
]


@pytest.mark.parametrize(("component", "positions", "head_act", "tl_fn"), TL_CASES)
def test_equals_transformer_lens(sharp, pair, component, positions, head_act, tl_fn):
    model = sharp.model
    clean, corrupted = _batches(model, pair)
    metric = _logit_diff(model, clean)
    ours = patch(
        model, clean, corrupted, metric, component, positions, head_act=head_act, max_batch=8
    )
    ref = _tl(tl_fn, model, clean, corrupted, metric)
    assert ours.values.shape == ref.shape
    torch.testing.assert_close(ours.values, ref, atol=ATOL, rtol=0)
    # The patches move the metric: the comparison is not between two constants.
    assert ours.effect().abs().max() > 1e-2
    if head_act in ("k", "v") and sharp.arch == "llama":
        assert ours.values.shape[-1] == model.spec.n_kv_heads == 2  # grouped-query layout


def test_whole_layer_and_last_position_equal_reference_loops(sharp, pair):
    """positions='all' (whole layer) and 'last' against one full forward pass each."""
    model = sharp.model
    clean, corrupted = _batches(model, pair)
    metric = AnswerProb.from_batch(clean)
    _, cache = model.bridge.run_with_cache(clean.tokens)
    for component, hook in (("resid", "hook_resid_pre"), ("mlp", "hook_mlp_out")):
        for positions, cols in (("all", slice(None)), ("last", slice(-1, None))):
            ours = patch(model, clean, corrupted, metric, component, positions)
            for layer in range(model.n_layers):
                name = f"blocks.{layer}.{hook}"

                def fn(act, hook, name=name, cols=cols):
                    act = act.clone()
                    act[:, cols] = cache[name][:, cols]
                    return act

                with torch.no_grad():
                    ref = metric(
                        model.bridge.run_with_hooks(corrupted.tokens, fwd_hooks=[(name, fn)])
                    )
                assert abs(float(ours.values[layer]) - float(ref)) < ATOL, (component, positions)


def test_max_batch_does_not_change_results(sharp, pair):
    model = sharp.model
    clean, corrupted = _batches(model, pair)
    metric = _logit_diff(model, clean)
    one = patch(model, clean, corrupted, metric, "heads", "each", max_batch=1)
    many = patch(model, clean, corrupted, metric, "heads", "each", max_batch=4096)
    torch.testing.assert_close(one.values, many.values, atol=1e-6, rtol=0)
    assert one.info["forward_passes"] > many.info["forward_passes"]


def test_clean_source_into_clean_run_changes_nothing(tiny, pair):
    model = tiny.model
    clean, _ = _batches(model, pair)
    metric = AnswerProb.from_batch(clean)
    res = patch(model, clean, clean, metric, "heads", "each")
    torch.testing.assert_close(
        res.values, torch.full_like(res.values, res.clean_metric), atol=1e-6, rtol=0
    )
    assert torch.isnan(res.normalized()).all()  # clean == corrupted: no scale to normalize by
    assert res.clean_metric == pytest.approx(res.corrupted_metric, abs=1e-7)


def test_padding_is_invisible(sharp, letters_task):
    """A left-padded batch of 2- and 4-shot prompts gives the mean of each prompt's own
    metric (whole-layer and last-position patches do not depend on column alignment)."""
    model = sharp.model
    prompts = sample_prompts(letters_task, k=2, n=2, seed=0) + sample_prompts(
        letters_task, k=4, n=2, seed=1
    )
    corrupted = shuffled_label_variants(prompts, seed=2)
    clean_b = tokenize_prompts(prompts, model, padding_side="left")
    corr_b = tokenize_prompts(corrupted, model, padding_side="left")
    assert len(set(clean_b.attention_mask.sum(1).tolist())) == 2
    for component, positions in (("heads", "all"), ("resid", "all"), ("heads", "last")):
        metric = AnswerProb.from_batch(clean_b)
        batched = patch(model, clean_b, corr_b, metric, component, positions)
        singles = []
        for p, q in zip(prompts, corrupted, strict=True):
            c1 = tokenize_prompts([p], model, padding_side="left")
            q1 = tokenize_prompts([q], model, padding_side="left")
            one = patch(model, c1, q1, AnswerProb.from_batch(c1), component, positions)
            singles.append(one.values)
        torch.testing.assert_close(batched.values, torch.stack(singles).mean(0), atol=1e-5, rtol=0)


def test_mean_and_zero_sources(sharp, pair):
    model = sharp.model
    clean, corrupted = _batches(model, pair)
    metric = AnswerProb.from_batch(clean)
    _, cache = model.bridge.run_with_cache(clean.tokens)
    name = "blocks.1.attn.hook_z"
    for source, value in (("mean", cache[name].mean(0, keepdim=True)), ("zero", 0.0)):
        res = patch(model, clean, corrupted, metric, "heads", "all", source=source, layers=[1])

        def fn(z, hook, value=value):
            z = z.clone()
            z[:, :, 2] = value if isinstance(value, float) else value[:, :, 2].expand_as(z[:, :, 2])
            return z

        with torch.no_grad():
            ref = metric(model.bridge.run_with_hooks(corrupted.tokens, fwd_hooks=[(name, fn)]))
        assert abs(float(res.values[0, 2]) - float(ref)) < ATOL
        assert res.layers == [1]


def test_bad_input_errors(tiny, pair, letters_task):
    model = tiny.model
    clean, corrupted = _batches(model, pair)
    metric = AnswerProb.from_batch(clean)
    with pytest.raises(LayerError, match="out of range"):
        patch(model, clean, corrupted, metric, "resid", layers=[7])
    with pytest.raises(ValueError, match="component must be"):
        patch(model, clean, corrupted, metric, "embed")
    longer = tokenize_prompts(sample_prompts(letters_task, k=4, n=4, seed=0), model)
    with pytest.raises(PromptError, match="differ in shape"):
        patch(model, longer, corrupted, metric, "resid")
    right = _batches(model, pair, side="right")
    # Right padding of equal lengths has no pad, so build a padded right batch by mixing k.
    mixed = sample_prompts(letters_task, k=2, n=2, seed=0) + sample_prompts(
        letters_task, k=3, n=2, seed=0
    )
    rb = tokenize_prompts(mixed, model, padding_side="right")
    with pytest.raises(PromptError, match="padding_side='left'"):
        patch(model, rb, rb, AnswerProb.from_batch(rb), "resid", "last")
    with pytest.raises(ValueError, match="scalar"):
        patch(model, clean, corrupted, lambda logits: logits[:, -1, 0], "resid", "all")
    with pytest.raises(PromptError, match="needs clean prompts"):
        patch(model, None, corrupted, metric, "resid", "all")
    with pytest.raises(ValueError, match="source must be"):
        patch(model, clean, corrupted, metric, "resid", "all", source="random")
    z0 = "blocks.0.attn.hook_z"
    with pytest.raises(ValueError, match="no activation for hook 'blocks.1.attn.hook_z'"):
        patch(model, None, corrupted, metric, "heads", source={z0: torch.zeros(4, 8)})
    with pytest.raises(ValueError, match="does not broadcast"):
        patch(model, None, corrupted, metric, "heads", layers=[0], source={z0: torch.zeros(3, 8)})
    with pytest.raises(ValueError, match="method must be"):
        patch(model, clean, corrupted, metric, "resid", method="gradient")
    assert right[0].tokens.shape == clean.tokens.shape


@pytest.mark.parametrize(
    ("component", "positions"), [("heads", "all"), ("resid", "each"), ("heads", "last")]
)
def test_no_hook_or_swapped_module_survives_an_error(sharp, pair, component, positions):
    """An error inside a patched forward pass (here from a user's hook on the last block, after
    the clean and corrupted runs) leaves the model exactly as it was: no hook, no skipped
    block, no replaced attention."""
    model = sharp.model
    clean, corrupted = _batches(model, pair)
    metric = AnswerProb.from_batch(clean)
    with torch.no_grad():
        before = model(corrupted.tokens)
    modules_before = [type(m) for m in model.bridge.modules()]
    calls = []

    def failing(act, hook):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("hook failed")

    last = f"blocks.{model.n_layers - 1}.hook_resid_post"
    with pytest.raises(RuntimeError, match="hook failed"):
        with model.bridge.hooks(fwd_hooks=[(last, failing)]):
            patch(model, clean, corrupted, metric, component, positions)
    assert len(calls) == 3
    assert [type(m) for m in model.bridge.modules()] == modules_before
    assert all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.bridge.hook_dict.values())
    with torch.no_grad():
        torch.testing.assert_close(model(corrupted.tokens), before, atol=0, rtol=0)


def test_last_position_unpacked_fallback(sharp, pair, monkeypatch):
    """Without packing (flash attention), last-position patches repeat the prefix cache along
    the batch: same values as TransformerLens-style full passes and as the packed path."""
    import tvlens.patching.exact as ex

    model = sharp.model
    clean, corrupted = _batches(model, pair)
    metric = _logit_diff(model, clean)
    packed = patch(model, clean, corrupted, metric, "heads", "last")
    monkeypatch.setattr(ex, "can_pack", lambda model, n_pos=None: False)
    unpacked = patch(model, clean, corrupted, metric, "heads", "last")
    torch.testing.assert_close(unpacked.values, packed.values, atol=ATOL, rtol=0)
