"""load_model on tiny random HF models of three architectures, checked against HF itself."""

import pytest
import torch
from jaxtyping import TypeCheckError

from tvlens.errors import LayerError, TVLensError
from tvlens.models import TVModel, load_model

ATOL = 1e-5


@pytest.fixture(scope="module")
def batch(tiny) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    # Ids >= 3 avoid the pad/bos/unk specials; 3 sequences of 10 tokens.
    return torch.randint(3, len(tiny.tokenizer), (3, 10), generator=gen)


@pytest.fixture(scope="module")
def hf_out(tiny, batch):
    with torch.no_grad():
        return tiny.hf(batch, output_hidden_states=True)


@pytest.fixture(scope="module")
def tv_cache(tiny, batch):
    with torch.no_grad():
        return tiny.model.run_with_cache(batch)


def test_spec_matches_what_was_built(tiny):
    spec, built = tiny.model.spec, tiny.built
    assert isinstance(tiny.model, TVModel)
    assert spec.n_layers == built["n_layers"] == 3
    assert spec.n_heads == built["n_heads"] == 4
    assert spec.n_kv_heads == built.get("n_kv_heads", built["n_heads"])
    assert spec.d_model == built["d_model"] == 32
    assert spec.d_head == 32 // 4
    assert spec.d_vocab == len(tiny.tokenizer)
    assert spec.n_ctx == built["n_ctx"]
    assert spec.source == "folder"
    assert spec.path == str(tiny.folder)
    assert spec.step is None


def test_llama_has_grouped_query_attention(make_tiny, letters_tokenizer):
    model = make_tiny("llama", "llama", letters_tokenizer).model
    assert (model.n_heads, model.n_kv_heads) == (4, 2)
    with torch.no_grad():
        _, cache = model.run_with_cache(model.to_tokens("a -> b"))
    assert cache["blocks.0.attn.hook_k"].shape[-2] == 2  # kv heads
    assert cache[model.z_hook(0)].shape[-2:] == (4, 8)  # query heads, d_head


def test_logits_equal_hf_logits(tiny, batch, hf_out, tv_cache):
    with torch.no_grad():
        logits = tiny.model(batch)
    assert logits.shape == (3, 10, len(tiny.tokenizer))
    torch.testing.assert_close(logits, hf_out.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(tv_cache[0], hf_out.logits, atol=ATOL, rtol=0)


def test_residual_stream_equals_hf_hidden_states(tiny, hf_out, tv_cache):
    _, cache = tv_cache
    model = tiny.model
    # hidden_states[l] enters block l; hidden_states[l+1] leaves it, except the last one, which
    # HF returns after the final norm: compare resid_post for layers 0..n-2 only.
    for layer in range(model.n_layers):
        torch.testing.assert_close(
            cache[model.resid_hook(layer, "pre")], hf_out.hidden_states[layer], atol=ATOL, rtol=0
        )
    for layer in range(model.n_layers - 1):
        torch.testing.assert_close(
            cache[model.resid_hook(layer, "post")],
            hf_out.hidden_states[layer + 1],
            atol=ATOL,
            rtol=0,
        )
    # resid_pre of layer l+1 is resid_post of layer l.
    for layer in range(model.n_layers - 1):
        torch.testing.assert_close(
            cache[model.resid_hook(layer + 1, "pre")], cache[model.resid_hook(layer, "post")]
        )


def test_head_outputs_sum_to_attention_output(tiny, tv_cache):
    _, cache = tv_cache
    model = tiny.model
    for layer in range(model.n_layers):
        z = cache[model.z_hook(layer)]
        assert z.shape == (3, 10, model.n_heads, model.d_head)
        per_head = model.head_outputs(z, layer)
        assert per_head.shape == (3, 10, model.n_heads, model.d_model)
        total = per_head.sum(-2) + model.b_O(layer)
        torch.testing.assert_close(total, cache[model.attn_out_hook(layer)], atol=ATOL, rtol=0)
    # resid_mid = resid_pre + attn_out for the sequential (non-parallel) architectures.
    if tiny.arch != "neox":
        for layer in range(model.n_layers):
            torch.testing.assert_close(
                cache[model.resid_hook(layer, "mid")],
                cache[model.resid_hook(layer, "pre")] + cache[model.attn_out_hook(layer)],
                atol=ATOL,
                rtol=0,
            )


def test_head_outputs_of_one_head_is_its_slice(tiny, tv_cache):
    """Zeroing all heads but one leaves exactly that head's contribution."""
    _, cache = tv_cache
    model = tiny.model
    z = cache[model.z_hook(1)]
    only_head_2 = torch.zeros_like(z)
    only_head_2[..., 2, :] = z[..., 2, :]
    full = model.head_outputs(z, 1)
    torch.testing.assert_close(model.head_outputs(only_head_2, 1).sum(-2), full[..., 2, :])


def test_hook_names_exist_on_the_model(tiny, request):
    """Every hook name TVModel hands out exists on the bridge (or is refused with a tvlens
    error): a name that does not exist only fails later, inside TransformerLens."""
    model = tiny.model
    names = set(model.bridge.hook_dict)
    for layer in range(model.n_layers):
        wanted = [
            model.z_hook(layer),
            model.attn_out_hook(layer),
            model.mlp_out_hook(layer),
        ]
        for where in ("pre", "post", "mid"):
            try:
                wanted.append(model.resid_hook(layer, where))
            except TVLensError:
                pass
        missing = [n for n in wanted if n not in names]
        assert not missing, missing
    assert model.resid_hooks("post") == [f"blocks.{i}.hook_resid_post" for i in range(3)]


def test_check_layer(tiny):
    model = tiny.model
    n = model.n_layers
    assert model.check_layer(0) == 0
    assert model.check_layer(n - 1) == n - 1
    assert model.check_layer(-1) == n - 1
    assert model.check_layer(-n) == 0
    assert model.resid_hook(-1) == f"blocks.{n - 1}.hook_resid_post"
    assert model.z_hook(-1) == f"blocks.{n - 1}.attn.hook_z"
    assert model.check_layer(n, allow_n_layers=True) == n
    for bad in (n, -n - 1, 100):
        with pytest.raises(LayerError, match=f"Layer {bad} is out of range"):
            model.check_layer(bad)
    with pytest.raises(LayerError):
        model.resid_hook(n)
    with pytest.raises(LayerError):
        model.W_O(n)
    with pytest.raises(LayerError, match="Head 4"):
        model.check_head(4)
    assert model.check_head(3) == 3


def test_to_tokens_round_trip(tiny):
    model = tiny.model
    text = "a -> b\nc ->"
    words = ["a", "->", "b", "\n", "c", "->"]
    ids = [7, 3, 8, 4, 9, 3]
    tokens = model.to_tokens(text)
    bos = [1] if model.prepend_bos else []
    assert tokens.tolist() == [bos + ids]
    assert model.to_str_tokens(tokens[0]) == (["<bos>"] if model.prepend_bos else []) + words
    assert model.to_str_tokens(ids) == words
    assert model.to_tokens(text, prepend_bos=False).tolist() == [ids]
    assert model.to_tokens(text, prepend_bos=True).tolist() == [[1, *ids]]
    # Several texts are right-padded with the pad id (0).
    two = model.to_tokens(["a -> b", "c"], prepend_bos=False)
    assert two.tolist() == [[7, 3, 8], [9, 0, 0]]


def test_gpt2_and_llama_prepend_bos(make_tiny, letters_tokenizer):
    for arch in ("gpt2", "llama"):
        assert make_tiny(arch, arch, letters_tokenizer).model.prepend_bos is True


def test_prepend_bos_override(tiny):
    model = load_model(tiny.folder, device="cpu", prepend_bos=False)
    assert model.prepend_bos is False
    assert model.to_tokens("a")[0].tolist() == [7]


def test_jaxtyping_hook_is_active(tiny):
    """conftest installs jaxtyping's import hook: tvlens annotations are checked at runtime."""
    model = tiny.model
    with pytest.raises(TypeCheckError, match="head_outputs"):
        model.head_outputs(torch.zeros(model.d_head), 0)  # rank 1: no head axis
    with pytest.raises(TypeCheckError, match="head_outputs"):
        model.head_outputs(torch.zeros(2, model.n_heads, model.d_head, dtype=torch.long), 0)
    with pytest.raises(TypeCheckError, match="forward"):
        model(torch.zeros(5, dtype=torch.long))  # tokens need [batch pos]


def test_head_outputs_rejects_wrong_head_shape(tiny):
    model = tiny.model
    with pytest.raises(ValueError, match="n_heads=4, d_head=8"):
        model.head_outputs(torch.zeros(2, 3, model.d_head), 0)
