"""Learned task vectors against an oracle: the official procedure
(baturaysaglam/ICL-Task-Representations: ``get_mean_head_activations``, ``get_attn_out``,
``LearnableTaskVector``, ``add_learnable_task_vector``, ``train_LTV.py``'s loop) re-written in
plain transformers + torch with hooks on the HF modules, run prompt by prompt as the official
``forward_pass`` does, on the same tiny HF model tvlens runs through TransformerLens (batched,
left-padded). The loss must agree at initialisation and after every step on a fixed seed."""

import pytest
import torch
import torch.nn.functional as F

from tests.reference import attn_out_proj
from tvlens.errors import ConfigError
from tvlens.extraction.ltv import ltv, training_prompts
from tvlens.extraction.methods import LTV
from tvlens.injection.intervention import apply_intervention
from tvlens.tasks import sample_prompts, tokenize_prompts

ORACLE_ARCHS = ("gpt2", "llama", "gemma2")  # gemma2: a norm after attention


@pytest.fixture(scope="module", params=ORACLE_ARCHS)
def arch_model(request, make_tiny, letters_tokenizer):
    return make_tiny(request.param, request.param, letters_tokenizer)


# ---------------------------------------------------------------------------- the oracle


def blocks(hf):
    return hf.transformer.h if hasattr(hf, "transformer") else hf.model.layers


def ids_of(tok, bos, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([([bos] if bos is not None else []) + ids])


@torch.no_grad()
def oracle_mean_z(hf, token_rows):
    """``get_mean_head_activations``: the input of every ``o_proj`` at the last token, averaged
    over prompts -> ``[layer, hidden]`` (heads concatenated)."""
    L = hf.config.num_hidden_layers
    acc = torch.zeros(L, hf.config.hidden_size)
    for ids in token_rows:
        got = {}
        handles = [
            attn_out_proj(hf, x).register_forward_pre_hook(
                lambda m, a, x=x, got=got: got.__setitem__(x, a[0][0, -1].clone())
            )
            for x in range(L)
        ]
        try:
            hf(ids)
        finally:
            for h in handles:
                h.remove()
        acc += torch.stack([got[x] for x in range(L)])
    return acc / len(token_rows)


@torch.no_grad()
def oracle_attn_out(hf, mean_z, combine):
    """``[layer, head, d]``: ``heads`` as the synthetic code's ``get_attn_outs`` (``o_proj`` of
    each head alone, bias included, d = hidden); ``blocks`` as the language code's
    ``get_attn_out`` (``o_proj`` of all heads, viewed as ``[head, d_head]``)."""
    L, H = hf.config.num_hidden_layers, hf.config.num_attention_heads
    D = hf.config.hidden_size
    dh = D // H
    out = []
    for x in range(L):
        proj = attn_out_proj(hf, x)
        if combine == "blocks":
            out.append(proj(mean_z[x][None, None])[0, 0].view(H, dh))
        else:
            rows = []
            for h in range(H):
                z = torch.zeros(D)
                z[h * dh : (h + 1) * dh] = mean_z[x, h * dh : (h + 1) * dh]
                rows.append(proj(z[None, None])[0, 0])
            out.append(torch.stack(rows))
    return torch.stack(out)


def oracle_ltv(weights, attn_out, combine):
    """``LearnableTaskVector.forward`` -> ``[layer, hidden]``."""
    if combine == "blocks":
        return (attn_out * weights[..., None]).reshape(weights.shape[0], -1)
    return (weights[..., None] * attn_out).sum(1)


def oracle_logits(hf, ids, lt_vector):
    """``ltv_intervention``: ``lt_vector[l]`` added to block ``l``'s output at the last token."""

    def hook(layer):
        def fn(mod, args, output):
            h = output[0] if isinstance(output, tuple) else output
            h = h.clone()
            h[:, -1] = h[:, -1] + lt_vector[layer]
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return fn

    handles = [b.register_forward_hook(hook(x)) for x, b in enumerate(blocks(hf))]
    try:
        return hf(ids).logits[:, -1]
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("combine", ["heads", "blocks"])
def test_loss_equals_the_official_objective_at_init_and_after_steps(
    arch_model, chain_task, combine
):
    model, hf, tok = arch_model.model, arch_model.hf, arch_model.tokenizer
    bos = model.prompt_bos_id
    k, n, steps, lr, bs, train_k, seed = 3, 4, 4, 0.05, 4, 3, 7
    res = ltv(model, chain_task, k=k, n_prompts=n, seed=seed, steps=steps, lr=lr,
              batch_size=bs, train_k=train_k, combine=combine)  # fmt: skip

    mean_prompts = sample_prompts(chain_task, k, n, seed=seed, template="arrow")
    attn_out = oracle_attn_out(
        hf, oracle_mean_z(hf, [ids_of(tok, bos, p.text) for p in mean_prompts]), combine
    )
    if combine == "heads":
        torch.testing.assert_close(res.basis, attn_out, atol=1e-5, rtol=1e-5)

    torch.manual_seed(seed)  # set_seed, then LearnableTaskVector's randn
    weights = torch.nn.Parameter(
        torch.randn(hf.config.num_hidden_layers, hf.config.num_attention_heads)
    )
    for p in hf.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([weights], lr=lr)
    losses = []
    try:
        for step in range(steps):
            prompts = training_prompts(chain_task, train_k, bs, seed, step, "arrow", "shuffled")
            lt = oracle_ltv(weights, attn_out, combine)
            logits = torch.cat([oracle_logits(hf, ids_of(tok, bos, p.text), lt) for p in prompts])
            targets = torch.tensor([tok(" " + p.answer, add_special_tokens=False)["input_ids"][0]
                                    for p in prompts])  # fmt: skip
            loss = F.cross_entropy(logits, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        for p in hf.parameters():
            p.requires_grad_(True)
    assert res.losses == pytest.approx(losses, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(res.last_weights, weights.detach(), atol=1e-5, rtol=1e-5)
    assert len(set(losses)) > 1  # the weights moved and the loss with them
    best = min(range(steps), key=losses.__getitem__)
    assert res.best_step == best

    # The steered logits of the result equal the official intervention's.
    lt = oracle_ltv(res.weights, attn_out, combine)
    p = training_prompts(chain_task, train_k, 1, seed, 99, "arrow", "zero_shot")[0]
    batch = tokenize_prompts([p], model)
    with torch.no_grad(), apply_intervention(model, res.intervention()):
        ours = model(batch.tokens, attention_mask=batch.attention_mask)[:, -1]
    with torch.no_grad():
        official = oracle_logits(hf, ids_of(tok, bos, p.text), lt)
    torch.testing.assert_close(ours, official, atol=1e-4, rtol=1e-4)


def test_training_lowers_the_loss_and_is_seeded(tiny, chain_task):
    kw = dict(k=3, n_prompts=4, steps=30, lr=0.1, batch_size=4, train_k=3, seed=1)
    a = ltv(tiny.model, chain_task, **kw)
    b = ltv(tiny.model, chain_task, **kw)
    assert a.losses == b.losses
    torch.testing.assert_close(a.weights, b.weights)
    assert min(a.losses[-5:]) < a.losses[0]
    assert a.losses[a.best_step] == min(a.losses)


def test_basis_does_not_depend_on_the_batch_size(tiny, chain_task):
    kw = dict(k=3, n_prompts=5, steps=1, batch_size=2, seed=4)
    a = ltv(tiny.model, chain_task, **kw)
    b = ltv(tiny.model, chain_task, **kw, max_batch=2)
    torch.testing.assert_close(a.basis, b.basis, atol=1e-5, rtol=1e-5)


def test_method_object_and_bad_input(tiny, chain_task):
    method = LTV(steps=2, batch_size=2, combine="blocks", train_on="zero_shot")
    ex = method.extract(tiny.model, chain_task, k=2, n_extract=2, seed=0, template=None)
    res = ex.extras["result"]
    assert torch.equal(ex.vector.vectors, res.vectors) and ex.vector.method == "ltv"
    iv = res.intervention(scale=2.0)
    assert iv.layers == tuple(range(tiny.model.n_layers))
    assert all(w.op == "add" and w.point == "resid_post" and w.scale == 2.0 for w in iv.writes)
    with pytest.raises(ConfigError, match="every layer"):
        res.intervention(layer=1)
    with pytest.raises(ConfigError, match="combine"):
        ltv(tiny.model, chain_task, k=2, n_prompts=2, steps=1, combine="sum")
    with pytest.raises(ConfigError, match="train_on"):
        ltv(tiny.model, chain_task, k=2, n_prompts=2, steps=1, train_on="icl")
    with pytest.raises(ConfigError, match="positive"):
        ltv(tiny.model, chain_task, k=2, n_prompts=2, steps=0)


def test_hooks_are_removed_after_an_error_in_training(tiny, chain_task, monkeypatch):
    """A forward pass that fails while the LTV's hooks are attached leaves none behind."""
    model = tiny.model
    seen = []

    def boom(self, *a, **k):
        seen.append(sum(bool(hp.fwd_hooks) for hp in self.bridge.hook_dict.values()))
        raise RuntimeError("boom")

    monkeypatch.setattr(type(model), "__call__", boom)
    with pytest.raises(RuntimeError, match="boom"):
        ltv(model, chain_task, k=2, n_prompts=2, steps=1, batch_size=2)
    monkeypatch.undo()
    assert seen and seen[0] >= model.n_layers  # the hooks were on when it failed
    assert not [hp.name for hp in model.bridge.hook_dict.values() if hp.fwd_hooks]


def test_both_methods_run_on_every_architecture(tiny_all, chain_task):
    """State vectors and LTVs extract and steer on every test architecture (post-norm,
    sliding-window, q/k-norm ones included), and their hooks are gone afterwards."""
    from tvlens.extraction.methods import StateVector

    model = tiny_all.model
    batch = tokenize_prompts(sample_prompts(chain_task, 0, 3, seed=1), model)
    with torch.no_grad():
        plain = model(batch.tokens, attention_mask=batch.attention_mask)[:, -1]
    sv = StateVector().extract(model, chain_task, k=6, n_extract=2, seed=0, template=None)
    lt = LTV(steps=2, batch_size=2).extract(model, chain_task, k=3, n_extract=2, seed=0,
                                            template=None)  # fmt: skip
    sv, lt = sv.extras["result"], lt.extras["result"]
    for iv in (sv.intervention(layer=model.n_layers - 1), lt.intervention()):
        with torch.no_grad(), apply_intervention(model, iv):
            steered = model(batch.tokens, attention_mask=batch.attention_mask)[:, -1]
        assert torch.isfinite(steered).all()
        assert (steered - plain).abs().max() > 1e-4
    assert not [hp.name for hp in model.bridge.hook_dict.values() if hp.fwd_hooks]
