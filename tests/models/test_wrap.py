"""TVModel.wrap / load_model on models already in memory: HF models (peft too) and bridges,
checked equal to loading the same weights from a folder."""

import copy

import pytest
import torch

from tvlens.errors import ConfigError, TVLensError
from tvlens.models import TVModel, load_model

ATOL = 1e-5


def _batch(tiny) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(3, len(tiny.tokenizer), (2, 9), generator=gen)


def _assert_same_model(a: TVModel, b: TVModel, tokens: torch.Tensor) -> None:
    """Same logits, same activations on every hook, same shape and BOS policy."""
    with torch.no_grad():
        la, ca = a.run_with_cache(tokens)
        lb, cb = b.run_with_cache(tokens)
    torch.testing.assert_close(la, lb, atol=ATOL, rtol=0)
    assert set(ca.keys()) == set(cb.keys())
    for key in ca.keys():
        torch.testing.assert_close(ca[key], cb[key], atol=ATOL, rtol=0)
    for f in ("architecture", "n_layers", "n_heads", "n_kv_heads", "d_model", "d_vocab", "n_ctx"):
        assert getattr(a.spec, f) == getattr(b.spec, f), f
    assert a.prompt_bos == b.prompt_bos
    assert a.to_tokens("a -> b").tolist() == b.to_tokens("a -> b").tolist()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_wrap_hf_model_equals_loading_its_folder(arch, make_tiny, letters_tokenizer):
    tiny = make_tiny(arch, arch, letters_tokenizer)
    hf = copy.deepcopy(tiny.hf)
    wrapped = TVModel.wrap(hf, letters_tokenizer)
    assert wrapped.spec.source == "memory"
    assert wrapped.spec.path is None
    _assert_same_model(wrapped, tiny.model, _batch(tiny))
    # The HF model still runs as before (its modules now call through the bridge's).
    with torch.no_grad():
        torch.testing.assert_close(
            hf(_batch(tiny)).logits, tiny.hf(_batch(tiny)).logits, atol=ATOL, rtol=0
        )


def test_load_model_takes_a_model_object_and_a_tokenizer_folder(make_tiny, letters_tokenizer):
    tiny = make_tiny("gpt2", "gpt2", letters_tokenizer)
    wrapped = load_model(copy.deepcopy(tiny.hf), tokenizer=tiny.folder)
    _assert_same_model(wrapped, tiny.model, _batch(tiny))
    assert load_model(tiny.model) is tiny.model  # a TVModel passes through


def test_wrap_bridge_equals_loading_its_folder(make_tiny, letters_tokenizer):
    from transformer_lens.model_bridge import TransformerBridge

    tiny = make_tiny("gpt2", "gpt2", letters_tokenizer)
    bridge = TransformerBridge.boot_transformers(str(tiny.folder), device="cpu")
    wrapped = TVModel.wrap(bridge, name="mine")
    assert wrapped.bridge is bridge and wrapped.name == "mine"
    _assert_same_model(wrapped, tiny.model, _batch(tiny))


def test_wrap_peft_lora_merges_a_copy(make_tiny, letters_tokenizer):
    from peft import LoraConfig, get_peft_model

    tiny = make_tiny("llama", "llama", letters_tokenizer)
    cfg = LoraConfig(r=2, target_modules=["q_proj", "o_proj"], init_lora_weights=False)
    torch.manual_seed(0)
    peft_model = get_peft_model(copy.deepcopy(tiny.hf), cfg).eval()
    tokens = _batch(tiny)
    with torch.no_grad():
        want = peft_model(tokens).logits
        base = tiny.hf(tokens).logits
    assert (want - base).abs().max() > 1e-3  # the adapter changes the model
    wrapped = TVModel.wrap(peft_model, letters_tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(tokens), want, atol=ATOL, rtol=0)
        # The user's peft model keeps its adapters and its outputs.
        torch.testing.assert_close(peft_model(tokens).logits, want, atol=0, rtol=0)
    assert wrapped.spec.origin["peft"] == {"type": "LORA", "adapter": "default", "merged": True}


def test_wrap_refuses_prompt_learning_peft(make_tiny, letters_tokenizer):
    from peft import PrefixTuningConfig, get_peft_model

    tiny = make_tiny("gpt2", "gpt2", letters_tokenizer)
    cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
    peft_model = get_peft_model(copy.deepcopy(tiny.hf), cfg)
    with pytest.raises(ConfigError, match="get_base_model"):
        TVModel.wrap(peft_model, letters_tokenizer)


def test_wrap_refuses_what_it_cannot_wrap(make_tiny, letters_tokenizer):
    tiny = make_tiny("gpt2", "gpt2", letters_tokenizer)
    from tvlens.models import build_hf_model

    fresh = build_hf_model("gpt2", len(letters_tokenizer), seed=0, **tiny.built)
    with pytest.raises(ConfigError, match="pass tokenizer="):
        TVModel.wrap(fresh)  # built from a config: no tokenizer on record
    with pytest.raises(ConfigError, match="already wrapped"):
        TVModel.wrap(tiny.model.bridge.original_model, letters_tokenizer)
    with pytest.raises(ConfigError, match="Cannot wrap a Linear"):
        TVModel.wrap(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="revision"):
        load_model(fresh, tokenizer=letters_tokenizer, revision="main")
    with pytest.raises(TVLensError, match="use load_model"):
        TVModel.wrap(str(tiny.folder))
