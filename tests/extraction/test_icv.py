"""ICV (Liu et al. 2024) against an oracle: the official procedure (shengliu66/ICV:
``get_hiddenstates`` + ``obtain_icv`` + ``ICVLayer``) re-written in plain torch on the HF model
itself (forward hooks on its embedding, its blocks and its MLP modules), on the same tiny
models tvlens loads through the bridge."""

import pytest
import torch
import torch.nn.functional as F

from tvlens.errors import ConfigError
from tvlens.extraction.icv import in_context_vector, sample_demonstrations
from tvlens.extraction.methods import ICV
from tvlens.injection.intervention import apply_intervention
from tvlens.tasks import ICLPrompt, tokenize_prompts
from tvlens.tasks.prompts import TEMPLATES


def _sharpen(hf) -> None:  # as conftest's: weights ×10, so that a steer moves logits a lot
    for p in hf.parameters():
        if p.ndim == 2:
            p.mul_(10.0)


def _blocks(hf):
    base = getattr(hf, "model", None) or getattr(hf, "transformer", None) or hf.gpt_neox
    return base.layers if hasattr(base, "layers") else base.h


def _ids(tiny, text):
    """The model's prompt start (its BOS, if its policy has one) then the text's tokens."""
    bos = tiny.model.bos_for()
    return ([bos] if bos is not None else []) + tiny.tokenizer(text, add_special_tokens=False)[
        "input_ids"
    ]


@torch.no_grad()
def oracle_icv(tiny, pairs, rank=1):
    """The official extraction: per text, the last token's hidden state after the embedding
    module and after every block; shifts H(y) - H(x) flattened over layers; PCA (centred SVD,
    signs from U); ICV = components + mean, per layer, the embedding row dropped."""
    hf = tiny.hf

    def trace(text):
        seen = []
        grab = lambda m, i, o: seen.append((o[0] if isinstance(o, tuple) else o)[:, -1])  # noqa: E731
        hooks = [hf.get_input_embeddings().register_forward_hook(grab)]
        hooks += [b.register_forward_hook(grab) for b in _blocks(hf)]
        try:
            hf(input_ids=torch.tensor([_ids(tiny, text)]))
        finally:
            for h in hooks:
                h.remove()
        return torch.cat(seen).float()  # [n_layers + 1, d]

    hs = [(trace(x), trace(y)) for x, y in pairs]
    data = torch.stack([(hy - hx).view(-1) for hx, hy in hs])
    mean = data.mean(0, keepdim=True)
    u, s, vh = torch.linalg.svd(data - mean, full_matrices=False)
    sign = torch.sign(u[torch.argmax(u.abs(), 0), torch.arange(u.shape[1])])
    comps = (vh * sign.view(-1, 1))[:rank]
    return (comps.sum(0, keepdim=True) + mean).mean(0).view(*hs[0][0].shape)[1:]


def oracle_steered_logits(tiny, icv, lam, tokens):
    """The official ICVLayer after every block's MLP module, on the HF model."""

    def layer(v):
        def hook(module, inputs, x):
            x32 = x.float()
            norm = x32.norm(dim=-1, keepdim=True)
            boost = 1.0 + torch.clamp(F.cosine_similarity(x32, -v[None, None], dim=-1), min=0)
            y = lam * boost.unsqueeze(-1) * F.normalize(v, dim=-1)
            return (F.normalize(F.normalize(x32, dim=-1) + y, dim=-1) * norm).to(x.dtype)

        return hook

    hooks = [b.mlp.register_forward_hook(layer(icv[i])) for i, b in enumerate(_blocks(tiny.hf))]
    try:
        with torch.no_grad():
            return tiny.hf(input_ids=tokens).logits
    finally:
        for h in hooks:
            h.remove()


def _queries(tiny, task):
    prompts = [ICLPrompt(task.name, (), ex, TEMPLATES["arrow"]) for ex in task.examples]
    return tokenize_prompts(prompts, tiny.model, padding_side="right")


def _hooks_left(model) -> set[str]:
    return {hp.name for hp in model.bridge.hook_dict.values() if hp.fwd_hooks or hp._forward_hooks}


@pytest.fixture(scope="module")
def gemma2(make_tiny, letters_tokenizer):
    return make_tiny("sharp-gemma2", "gemma2", letters_tokenizer, edit=_sharpen)


@pytest.mark.parametrize("pair", ["separate", "joined"])
def test_icv_equals_the_official_procedure(sharp, letters_task, pair):
    ex = ICV(alpha=0.3, pair=pair).extract(
        sharp.model, letters_task, k=5, n_extract=0, seed=3, template=None
    )
    res = ex.extras["result"]
    assert ex.vector.method == "icv" and torch.equal(ex.vector.vectors, res.vectors)
    demos = sample_demonstrations(letters_task, 5, 3)
    assert res.info["demonstrations"] == [[d.input, d.output] for d in demos]
    if pair == "separate":  # the official code: bare input, bare output
        pairs = [(d.input, d.output) for d in demos]
    else:
        pairs = [(f"{d.input} ->", f"{d.input} -> {d.output}") for d in demos]
    expected = oracle_icv(sharp, pairs)
    assert res.vectors.shape == (sharp.model.n_layers, sharp.model.d_model)
    torch.testing.assert_close(res.vectors, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("which", ["sharp", "gemma2"])
def test_icv_steers_logits_as_the_official_layer(which, sharp, gemma2, letters_task):
    """Every layer's MLP output turned toward its ICV: the same logits as the official layer
    on the HF model (gpt2, llama, neox; Gemma-2 where the MLP output is normed after)."""
    tiny = gemma2 if which == "gemma2" else sharp
    res = in_context_vector(tiny.model, letters_task, k=5, seed=0, alpha=0.5)
    batch = _queries(tiny, letters_task)
    with torch.no_grad():
        clean = tiny.model(batch.tokens, attention_mask=batch.attention_mask)
        with apply_intervention(tiny.model, res.intervention()):
            steered = tiny.model(batch.tokens, attention_mask=batch.attention_mask)
    assert not _hooks_left(tiny.model)
    expected = oracle_steered_logits(tiny, res.vectors, 0.5, batch.tokens)
    torch.testing.assert_close(steered, expected, atol=1e-4, rtol=1e-4)
    assert (steered - clean).abs().max() > 1e-2  # the steer does something
    # alpha is a knob of the intervention (tuned on dev): 0 changes nothing
    with torch.no_grad(), apply_intervention(tiny.model, res.intervention(alpha=0.0)):
        same = tiny.model(batch.tokens, attention_mask=batch.attention_mask)
    torch.testing.assert_close(same, clean, atol=1e-4, rtol=1e-4)


def test_icv_intervention_says_what_it_writes_and_never_leaks(tiny, letters_task):
    res = in_context_vector(tiny.model, letters_task, k=3, seed=0)
    iv = res.intervention()
    assert iv.layers == tuple(range(tiny.model.n_layers))
    assert {(w.point, w.op, w.positions, w.scale) for w in iv.writes} == {
        ("mlp_module", "icv", "all", 0.1)
    }
    assert res.intervention(layers=[1]).layers == (1,)
    with pytest.raises(RuntimeError, match="boom"):
        with apply_intervention(tiny.model, iv):
            raise RuntimeError("boom")
    assert not _hooks_left(tiny.model)


def test_icv_refuses_bad_options(tiny, letters_task):
    with pytest.raises(ConfigError, match="k must be >= 2"):
        in_context_vector(tiny.model, letters_task, k=1)
    with pytest.raises(ConfigError, match="pair must be"):
        in_context_vector(tiny.model, letters_task, k=3, pair="both")
    with pytest.raises(ConfigError, match="k=9 demonstrations"):
        in_context_vector(tiny.model, letters_task, k=9)
    assert ICV.name == "icv" and ICV.min_k == 2 and ICV().alpha == 0.1


def test_tune_alpha_picks_the_best_dev_accuracy(sharp, letters_task):
    from tvlens.extraction.icv import first_token_accuracy, tune_alpha

    res = in_context_vector(sharp.model, letters_task, k=4, seed=0)
    dev = _queries(sharp, letters_task)
    best, scores = tune_alpha(sharp.model, res, dev, alphas=(0.0, 0.5, 2.0))
    assert set(scores) == {0.0, 0.5, 2.0} and scores[best] == max(scores.values())
    # the score at α=0 is the zero-shot accuracy, computed by hand
    with torch.no_grad():
        logits = sharp.model(dev.tokens, attention_mask=dev.attention_mask)
    pred = logits[torch.arange(len(dev)), dev.query_pos].argmax(-1)
    assert scores[0.0] == pytest.approx(float((pred == dev.answer_first).float().mean()))
    assert first_token_accuracy(sharp.model, dev) == pytest.approx(scores[0.0])
    with pytest.raises(ConfigError, match="alphas is empty"):
        tune_alpha(sharp.model, res, dev, alphas=())
