"""apply_intervention(): each op writes what it says at the hook it names, several writes
apply together, and no hook is left after the block, also when the block raises."""

import pytest
import torch

from tvlens.injection.intervention import (
    Intervention,
    InterventionError,
    Write,
    apply_intervention,
)
from tvlens.tasks import sample_prompts, tokenize_prompts


@pytest.fixture(scope="module")
def batch(tiny, letters_task):
    return tokenize_prompts(sample_prompts(letters_task, k=2, n=3, seed=0), tiny.model)


def _cache(model, batch, names):
    with torch.no_grad():
        _, cache = model.run_with_cache(
            batch.tokens, attention_mask=batch.attention_mask, names_filter=names
        )
    return {n: cache[n] for n in names}


def _hooks_left(model) -> set[str]:
    return {hp.name for hp in model.bridge.hook_dict.values() if hp.fwd_hooks or hp._forward_hooks}


@pytest.mark.parametrize("op", ["replace", "add", "mix", "add_keep_norm", "icv"])
def test_each_op_writes_its_formula(tiny, batch, op):
    model = tiny.model
    name = model.attn_out_hook(1)
    clean = _cache(model, batch, [name])[name]
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    w = Write(1, v, point="attn_out", op=op, scale=0.5, keep=0.7, positions="all")
    with apply_intervention(model, [w]):
        got = _cache(model, batch, [name])[name]
    expected = {
        "replace": v.expand_as(clean),
        "add": clean + 0.5 * v,
        "mix": 0.7 * clean + 0.5 * v,
    }.get(op)
    if op == "add_keep_norm":
        shifted = clean + 0.5 * v
        expected = shifted * clean.norm(dim=-1, keepdim=True) / shifted.norm(dim=-1, keepdim=True)
    if op == "icv":  # the official ICVLayer, written out: unit shift, 1 + max(0, cos(h, -v))
        n = clean.norm(dim=-1, keepdim=True)
        cos = (clean @ -v)[..., None] / (n * v.norm())
        shift = 0.5 * (1 + cos.clamp(min=0)) * v / v.norm()
        turned = clean / n + shift
        expected = turned / turned.norm(dim=-1, keepdim=True) * n
        torch.testing.assert_close(got.norm(dim=-1), clean.norm(dim=-1))
    torch.testing.assert_close(got, expected)
    assert not _hooks_left(model)


def test_last_position_and_several_layers(tiny, batch):
    model = tiny.model
    names = [model.resid_hook(0), model.resid_hook(2)]
    clean = _cache(model, batch, names)
    v = torch.ones(model.d_model)
    iv = Intervention((Write(0, v, op="replace"), Write(2, v, op="replace")), method="test")
    assert iv.layers == (0, 2)
    with apply_intervention(model, iv):
        got = _cache(model, batch, names)
    for n in names:
        assert torch.equal(got[n][:, -1], v.expand(len(batch), -1))
    assert torch.equal(got[names[0]][:, :-1], clean[names[0]][:, :-1])


def test_hooks_removed_on_error_and_bad_writes_refused(tiny):
    model = tiny.model
    with pytest.raises(RuntimeError, match="boom"):
        with apply_intervention(model, [Write(0, torch.zeros(model.d_model))]):
            raise RuntimeError("boom")
    assert not _hooks_left(model)
    with pytest.raises(InterventionError, match="d_model"):
        with apply_intervention(model, [Write(0, torch.zeros(model.d_model + 1))]):
            pass
    with pytest.raises(InterventionError, match="op must be"):
        Write(0, torch.zeros(4), op="scale")
    with pytest.raises(InterventionError, match="at least one"):
        Intervention(())


@pytest.mark.parametrize("module, block", [("attn_module", "attn_out"), ("mlp_module", "mlp_out")])
def test_module_points_are_the_block_outputs_on_pre_norm_models(tiny, batch, module, block):
    """On pre-norm blocks the module's own output is what the block adds: a write at either
    point gives the same logits (Gemma-2 puts a norm between them, see the ICV/I2CL tests)."""
    model = tiny.model
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    out = []
    for point in (module, block):
        w = Write(1, v, point=point, positions="all")
        with torch.no_grad(), apply_intervention(model, [w]):
            out.append(model(batch.tokens, attention_mask=batch.attention_mask))
    torch.testing.assert_close(out[0], out[1])
    with torch.no_grad():
        clean = model(batch.tokens, attention_mask=batch.attention_mask)
    assert (out[0] - clean).abs().max() > 1e-4
