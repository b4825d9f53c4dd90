"""The private TransformerLens / transformers internals tvlens relies on (all reached through
``tvlens.models.adapter``) are still there and still mean what tvlens assumes. Each failure
names what changed, so that an upgrade of either library fails here, loudly, instead of as a
wrong number somewhere in patching."""

import inspect

import pytest
import torch
from transformers import cache_utils

from tvlens.models import adapter
from tvlens.models.hf import POST_NORM_ARCHITECTURES

UPGRADE = "(transformer-lens / transformers upgraded? see tvlens/models/adapter.py)"


def test_bridge_components_wrap_their_hf_modules(tiny_all):
    model = tiny_all.model
    for i, block in enumerate(model.bridge.blocks):
        hf = adapter.hf_module(block)
        assert hf is not None, f"bridge blocks no longer keep their HF layer in _modules {UPGRADE}"
        # GPT2Block, LlamaDecoderLayer, GPTNeoXLayer, Gemma2DecoderLayer...
        assert type(hf).__name__.endswith(("Block", "Layer")), (type(hf).__name__, UPGRADE)
        # The bridge's attention and MLP are children of the HF layer: the slots tvlens swaps.
        assert adapter.child_name(hf, block.attn) is not None, (
            f"block {i}'s attention is no longer a child of the HF layer {UPGRADE}"
        )
        assert adapter.child_name(hf, block.mlp) is not None, UPGRADE


def test_swapped_restores_on_error(tiny_all):
    block = tiny_all.model.bridge.blocks[0]
    before = adapter.hf_module(block)
    with pytest.raises(RuntimeError, match="boom"):
        with adapter.swapped_hf_modules([block], torch.nn.Identity):
            assert isinstance(adapter.hf_module(block), torch.nn.Identity)
            raise RuntimeError("boom")
    assert adapter.hf_module(block) is before


def test_reshape_o_and_position_ids(tiny_all):
    model = tiny_all.model
    W = adapter.reshape_o(model.bridge, model.bridge.blocks[0].attn.W_O)
    assert W.shape == (model.n_heads, model.d_head, model.d_model), (
        f"TransformerBridge._reshape_o returned {tuple(W.shape)} {UPGRADE}"
    )
    assert isinstance(adapter.accepts_derived_position_ids(model.bridge), bool), UPGRADE
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    ids = adapter.offset_position_ids(mask)
    assert ids[0, 2:].tolist() == [0, 1, 2] and ids[1].tolist() == [0, 1, 2, 3, 4], (
        f"get_offset_position_ids no longer shifts left-padded positions {UPGRADE}"
    )


def test_hook_attn_out_alias_marks_post_norm_blocks(tiny_all):
    """``hook_attn_out`` is the attention module's output on pre-norm blocks and the
    post-attention norm's output on Gemma-2 / OLMo-2 blocks (what tvlens's attention shortcut
    is decided from)."""
    model = tiny_all.model
    target = adapter.block_hook_target(model.bridge.blocks[0], "hook_attn_out")
    post = tiny_all.arch in POST_NORM_ARCHITECTURES
    expected = "ln1_post.hook_out" if post else "attn.hook_out"
    assert target == expected, f"hook_attn_out now points to {target!r} {UPGRADE}"
    for layer in range(model.n_layers):
        for name in (model.attn_module_hook(layer), model.attn_out_hook(layer)):
            assert name in model.bridge.hook_dict, f"no hook {name!r} {UPGRADE}"


def test_attention_config(tiny_all):
    model = tiny_all.model
    assert adapter.attn_implementation(model.bridge) in ("eager", "sdpa"), UPGRADE
    span = adapter.attention_span(model.bridge)
    assert span == tiny_all.built.get("sliding_window")


def test_cache_layer_classes_are_the_ones_cut_cache_knows():
    """Every cache layer class of transformers: a new one must be taught to ``cut_cache`` (or
    refused there) before the pin moves."""
    known = {
        "DynamicLayer": "cut",
        "DynamicSlidingWindowLayer": "cut",
        "DynamicIndexedLayer": "cut",
        "StaticLayer": "refused",
        "StaticSlidingWindowLayer": "refused",
        "StaticIndexedLayer": "refused",
        "BaseQuantizedLayer": "refused",
        "QuantizedLayer": "refused",
        "QuantoQuantizedLayer": "refused",
        "HQQQuantizedLayer": "refused",
        "Fp8QuantizedLayer": "refused",
        "LinearAttentionLayer": "refused",
        "LinearAttentionAndFullAttentionLayer": "refused",
        "LinearAttentionAndSlidingWindowAttentionLayer": "refused",
        "LinearAttentionAndStaticFullAttentionLayer": "refused",
        "LinearAttentionAndStaticSlidingWindowAttentionLayer": "refused",
        "DummyLayer": "refused",
    }
    found = {
        name
        for name, obj in vars(cache_utils).items()
        if inspect.isclass(obj)
        and obj.__module__ == cache_utils.__name__
        and (name.endswith("Layer") or name == "DummyLayer")
    }
    new = sorted(found - set(known))
    assert not new, f"transformers has new cache layer classes {new}: handle them in cut_cache"
    mapped = {c.__name__ for c in cache_utils.DYNAMIC_LAYER_TYPE_MAPPING.values()}
    assert mapped <= set(known), f"unknown dynamic layer types {sorted(mapped - set(known))}"
    # The attributes cut_cache reads.
    layer = cache_utils.DynamicSlidingWindowLayer(sliding_window=4)
    for attr in ("keys", "values", "cumulative_length", "sliding_window", "is_initialized"):
        assert hasattr(layer, attr), f"DynamicSlidingWindowLayer lost {attr!r} {UPGRADE}"
    indexed = cache_utils.DynamicIndexedLayer()
    for attr in ("indexer_keys", "indexer_position_ids"):
        assert hasattr(indexed, attr), f"DynamicIndexedLayer lost {attr!r} {UPGRADE}"


def test_full_cache_keeps_every_position(sharp_sliding):
    """The cache tvlens asks for holds every position of every layer, also on sliding-window
    layers, and a pass with it equals a plain pass."""
    model = sharp_sliding.model
    tokens = torch.arange(3, 3 + 14)[None] % model.spec.d_vocab
    with torch.no_grad():
        plain = model(tokens)
        logits, cache = model.bridge(
            tokens, return_type="logits_and_cache", past_key_values=adapter.full_cache()
        )
    assert all(type(x) is cache_utils.DynamicLayer for x in adapter.cache_layers(cache)), UPGRADE
    assert all(x.keys.shape[-2] == 14 for x in adapter.cache_layers(cache))
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)
