"""I2CL (Li et al. 2025) against an oracle: the official procedure (LzVv123456/I2CL:
``extract_latent`` + ``get_context_vector`` + ``inject_hook_func`` + ``calibrate_strength``)
re-written in plain torch on the HF model itself (forward hooks on its attention and MLP
modules), on the same tiny models tvlens loads through the bridge."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tvlens.errors import ConfigError
from tvlens.extraction.i2cl import implicit_icl
from tvlens.extraction.icv import sample_demonstrations
from tvlens.extraction.methods import I2CL
from tvlens.injection.intervention import apply_intervention
from tvlens.tasks import ICLPrompt, tokenize_prompts
from tvlens.tasks.prompts import TEMPLATES


def _sharpen(hf) -> None:  # as conftest's: weights ×10, so that a mix moves logits a lot
    for p in hf.parameters():
        if p.ndim == 2:
            p.mul_(10.0)


def _blocks(hf):
    base = getattr(hf, "model", None) or getattr(hf, "transformer", None) or hf.gpt_neox
    return base.layers if hasattr(base, "layers") else base.h


def _modules(hf):
    """Per layer, (mlp module, attention module): the official order of ``config['module']``."""
    out = []
    for b in _blocks(hf):
        attn = next(getattr(b, n) for n in ("self_attn", "attn", "attention") if hasattr(b, n))
        out.append((b.mlp, attn))
    return out


def _ids(tiny, text):
    bos = tiny.model.bos_for()
    return ([bos] if bos is not None else []) + tiny.tokenizer(text, add_special_tokens=False)[
        "input_ids"
    ]


def _first(o):
    return o[0] if isinstance(o, tuple) else o


@torch.no_grad()
def oracle_context(tiny, demos):
    """Each demonstration ``x -> y\\n`` run alone; every module's output at its last token;
    the mean over demonstrations: ``[layer, (mlp, attn), d]``."""
    mods = _modules(tiny.hf)
    per_demo = []
    for d in demos:
        seen = {}
        hooks = [
            mod.register_forward_hook(
                lambda m, i, o, key=(layer, j), seen=seen: seen.__setitem__(key, _first(o)[0, -1])
            )
            for layer, pair in enumerate(mods)
            for j, mod in enumerate(pair)
        ]
        try:
            tiny.hf(input_ids=torch.tensor([_ids(tiny, f"{d.input} -> {d.output}\n")]))
        finally:
            for h in hooks:
                h.remove()
        per_demo.append(
            torch.stack([torch.stack([seen[(i, 0)], seen[(i, 1)]]) for i in range(len(mods))])
        )
    return torch.stack(per_demo).mean(0)


def _inject(tiny, context, coef, train_mode=False, noise_scale=0.001):
    """The official linear injection at every position (noise in train mode)."""

    def make(layer, j):
        def hook(module, inputs, outputs):
            out = _first(outputs)
            v = context[layer, j].expand(out.size(0), out.size(1), -1)
            out = coef[layer, j, 1] * out + coef[layer, j, 0] * v
            if train_mode:
                norm = torch.norm(out, p=2, dim=-1).detach().unsqueeze(-1)
                out = out + torch.randn_like(out).detach() * norm * noise_scale
            return (out, *outputs[1:]) if isinstance(outputs, tuple) else out

        return hook

    return [
        mod.register_forward_hook(make(layer, j))
        for layer, pair in enumerate(_modules(tiny.hf))
        for j, mod in enumerate(pair)
    ]


def _padded(tiny, texts):
    rows = [_ids(tiny, t) for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    return ids, mask, mask.sum(1) - 1


def oracle_calibrate(tiny, context, demos, epochs, seed, lr=0.01, wd=1e-3, bs=2):
    """``calibrate_strength`` with the official defaults, seeded as ``set_seed(seed)``."""
    n_layers = len(_blocks(tiny.hf))
    coef = torch.nn.Parameter(torch.zeros(n_layers, 2, 2) + torch.tensor([0.1, 1.0]))
    opt = torch.optim.AdamW([{"params": coef}], lr, weight_decay=wd)
    total = epochs * len(demos) // bs
    warm = int((0.05 * epochs) * (len(demos) // bs))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, s / warm) * (1 + math.cos(math.pi * s / total)) / 2 if s > warm else s / warm
        ),
    )
    index = list(range(len(demos)))
    shuffler = np.random.RandomState(seed)
    params = list(tiny.hf.parameters())
    for p in params:
        p.requires_grad_(False)
    losses = []
    try:
        with torch.random.fork_rng(), torch.enable_grad():
            torch.manual_seed(seed)
            hooks = _inject(tiny, context, coef, train_mode=True)
            try:
                for _ in range(epochs):
                    epoch = []
                    for _ in range(len(demos) // bs):
                        shuffler.shuffle(index)
                        chosen = [demos[i] for i in index[:bs]]
                        ids, mask, loc = _padded(tiny, [f"{d.input} ->" for d in chosen])
                        gold = torch.tensor(
                            [tiny.tokenizer(" " + d.output, add_special_tokens=False)[
                                "input_ids"][0] for d in chosen]
                        )  # fmt: skip
                        logits = tiny.hf(input_ids=ids, attention_mask=mask).logits
                        loss = F.cross_entropy(logits[torch.arange(len(loc)), loc], gold)
                        epoch.append(loss.item())
                        opt.zero_grad()
                        loss.backward()
                        opt.step()
                        sched.step()
                    losses.append(float(np.mean(epoch)))
            finally:
                for h in hooks:
                    h.remove()
    finally:
        for p in params:
            p.requires_grad_(True)
    return coef.detach(), losses


def _hooks_left(model) -> set[str]:
    return {hp.name for hp in model.bridge.hook_dict.values() if hp.fwd_hooks or hp._forward_hooks}


@pytest.fixture(scope="module")
def gemma2(make_tiny, letters_tokenizer):
    return make_tiny("sharp-gemma2", "gemma2", letters_tokenizer, edit=_sharpen)


def _queries(tiny, task):
    prompts = [ICLPrompt(task.name, (), ex, TEMPLATES["arrow"]) for ex in task.examples]
    return tokenize_prompts(prompts, tiny.model, padding_side="right")


@pytest.mark.parametrize("which", ["sharp", "gemma2"])
def test_i2cl_context_vectors_and_mix_equal_the_official_procedure(
    which, sharp, gemma2, letters_task
):
    """Context vectors (module outputs at each demonstration's last token, averaged) and the
    steered logits under given coefficients equal the oracle's, on gpt2, llama, neox and
    Gemma-2 (whose post-norms sit after the modules the official code hooks)."""
    tiny = gemma2 if which == "gemma2" else sharp
    ex = I2CL(epochs=0).extract(tiny.model, letters_task, k=4, n_extract=0, seed=1, template=None)
    res = ex.extras["result"]
    assert torch.equal(ex.vector.vectors, res.context[:, 1])  # the attention context vectors
    demos = sample_demonstrations(letters_task, 4, 1)
    torch.testing.assert_close(res.context, oracle_context(tiny, demos), atol=1e-5, rtol=1e-4)
    assert torch.equal(res.coef, torch.tensor([0.1, 1.0]).expand_as(res.coef))  # the official init
    coef = torch.rand(res.coef.shape, generator=torch.Generator().manual_seed(0)) + 0.5
    res = replace(res, coef=coef)
    batch = _queries(tiny, letters_task)
    with torch.no_grad():
        clean = tiny.model(batch.tokens, attention_mask=batch.attention_mask)
        with apply_intervention(tiny.model, res.intervention()):
            mixed = tiny.model(batch.tokens, attention_mask=batch.attention_mask)
    hooks = _inject(tiny, res.context, coef)
    try:
        with torch.no_grad():
            expected = tiny.hf(input_ids=batch.tokens, attention_mask=batch.attention_mask).logits
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(mixed, expected, atol=1e-4, rtol=1e-4)
    assert (mixed - clean).abs().max() > 1e-2
    assert not _hooks_left(tiny.model)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_i2cl_calibration_equals_the_official_training(arch, make_tiny, letters_tokenizer,
                                                       letters_task):  # fmt: skip
    """Same objective, optimiser, schedule, batches and noise on a fixed seed: the same
    coefficients and epoch losses as the official loop (20 epochs of 2 steps)."""
    tiny = make_tiny(f"sharp-{arch}", arch, letters_tokenizer, edit=_sharpen)
    res = implicit_icl(tiny.model, letters_task, k=5, seed=7, epochs=20)
    demos = sample_demonstrations(letters_task, 5, 7)
    coef, losses = oracle_calibrate(tiny, res.context, demos, epochs=20, seed=7)
    torch.testing.assert_close(res.coef, coef, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(res.losses, losses, rtol=1e-4, atol=1e-6)
    init = torch.tensor([0.1, 1.0]).expand_as(coef)
    assert (coef - init).abs().max() > 1e-2  # training moved the coefficients
    assert len(res.losses) == 20 and not _hooks_left(tiny.model)


def test_i2cl_hooks_removed_when_calibration_fails(tiny, letters_task, monkeypatch):
    def boom(self, *a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(torch.optim.AdamW, "step", boom)
    with pytest.raises(RuntimeError, match="boom"):
        implicit_icl(tiny.model, letters_task, k=2, epochs=1)
    assert not _hooks_left(tiny.model)
    assert all(p.grad is None for p in tiny.model.bridge.parameters())


def test_i2cl_intervention_and_bad_options(tiny, letters_task):
    res = implicit_icl(tiny.model, letters_task, k=2, epochs=0)
    iv = res.intervention()
    assert iv.layers == tuple(range(tiny.model.n_layers))
    assert {(w.point, w.op, w.positions, round(w.scale, 6), w.keep) for w in iv.writes} == {
        ("mlp_module", "mix", "all", 0.1, 1.0),
        ("attn_module", "mix", "all", 0.1, 1.0),
    }
    with pytest.raises(ConfigError, match="k >= batch_size"):
        implicit_icl(tiny.model, letters_task, k=1)
    assert I2CL.name == "i2cl" and I2CL.min_k == 2 and I2CL().lr == 0.01
