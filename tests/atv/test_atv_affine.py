"""The static affine ATV (tvlens.atv.affine) is the theorem's form: with U, V set from a peft
LoRA on each block's MLP output projection (U = B·scaling, V = Aᵀ, b = 0) the steered target
gives the LoRA model's logits, and with b ≠ 0 those of LoRA plus a bias on that projection;
positions outside the attention mask are not written; hooks are gone after an error; its
parameter count is L·(r·(d_model + d_mlp) + d_model)."""

import copy
import re

import pytest
import torch
from peft import get_peft_model

from tvlens.atv.affine import AffineSteered, StaticAffineATV, mlp_width, steer_affine
from tvlens.compare.fitting import hf_logits
from tvlens.compare.options import PeftOptions
from tvlens.compare.tuned import peft_config
from tvlens.errors import TVLensError

RANK = 2
# Left-padded rows of different lengths (word ids of the letters tokenizer, 0 = pad).
TOKENS = torch.tensor([[1, 7, 3, 8, 4, 9], [0, 0, 1, 10, 3, 11], [0, 1, 12, 3, 13, 4]])
MASK = (TOKENS != 0).long()


def _hooks_left(model) -> set[str]:
    return {hp.name for hp in model.bridge.hook_dict.values() if hp.fwd_hooks or hp._forward_hooks}


def _lora(tiny):
    """A peft LoRA of rank RANK on each block's MLP output projection, B made non-zero, and
    its layers' LoRA modules in block order."""
    hf = copy.deepcopy(tiny.hf)
    pm = get_peft_model(hf, peft_config("lora_sites", PeftOptions(), hf.config.model_type, RANK))
    sites = {}
    for name, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and "default" in mod.lora_A:
            sites[int(re.search(r"\.(\d+)\.", name).group(1))] = mod
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for mod in sites.values():
            mod.lora_B["default"].weight.copy_(
                0.5 * torch.randn(mod.lora_B["default"].weight.shape, generator=g)
            )
    return pm.eval(), [sites[i] for i in sorted(sites)]


def _affine_from(tiny, sites, bias=None) -> StaticAffineATV:
    model = tiny.model
    module = StaticAffineATV(range(model.n_layers), model.d_model, mlp_width(model), RANK)
    with torch.no_grad():
        for i, mod in enumerate(sites):
            A, B = mod.lora_A["default"].weight, mod.lora_B["default"].weight
            module.U[i] = B * mod.scaling["default"]
            module.V[i] = A.T
            if bias is not None:
                module.b[i] = bias[i]
    return module


def _assert_real_close(got, want):
    real = MASK.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=1e-4)


def test_affine_from_lora_is_lora(tiny):
    pm, sites = _lora(tiny)
    assert len(sites) == tiny.model.n_layers
    module = _affine_from(tiny, sites)
    with torch.no_grad():
        want = hf_logits(pm, TOKENS, MASK)
        got = AffineSteered(tiny.model, module)(TOKENS, MASK)
        clean = tiny.model(TOKENS, attention_mask=MASK)
    assert not torch.allclose(want[MASK.bool()], clean[MASK.bool()], atol=1e-2)  # LoRA acts
    _assert_real_close(got, want)
    assert not _hooks_left(tiny.model)


def test_affine_with_bias_is_lora_plus_a_bias(tiny):
    pm, sites = _lora(tiny)
    g = torch.Generator().manual_seed(4)
    bias = 0.3 * torch.randn(tiny.model.n_layers, tiny.model.d_model, generator=g)
    module = _affine_from(tiny, sites, bias)
    handles = [mod.register_forward_hook(lambda m, i, out, b=b: out + b)
               for mod, b in zip(sites, bias, strict=True)]  # fmt: skip
    try:
        with torch.no_grad():
            want = hf_logits(pm, TOKENS, MASK)
            without = hf_logits(_lora(tiny)[0], TOKENS, MASK)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        got = AffineSteered(tiny.model, module)(TOKENS, MASK)
    assert not torch.allclose(want[MASK.bool()], without[MASK.bool()], atol=1e-2)  # b acts
    _assert_real_close(got, want)


def test_positions_outside_the_mask_are_not_written(tiny):
    _, sites = _lora(tiny)
    module = _affine_from(tiny, sites, torch.ones(tiny.model.n_layers, tiny.model.d_model))
    model = tiny.model
    with torch.no_grad():
        clean = model(TOKENS, attention_mask=MASK)
        with steer_affine(model, module, torch.zeros_like(MASK)):
            got = model(TOKENS, attention_mask=MASK)
    assert torch.equal(got, clean)


def test_hooks_removed_after_an_error_and_bad_shapes_refused(tiny):
    model = tiny.model
    module = StaticAffineATV(range(model.n_layers), model.d_model, mlp_width(model), RANK)
    with pytest.raises(RuntimeError, match="boom"), steer_affine(model, module, MASK):
        assert _hooks_left(model)
        raise RuntimeError("boom")
    assert not _hooks_left(model)
    with pytest.raises(TVLensError, match="steer the tokens"), steer_affine(model, module, MASK):
        model(TOKENS[:2], attention_mask=MASK[:2])
    assert not _hooks_left(model)
    wrong = StaticAffineATV([0], model.d_model + 1, mlp_width(model), RANK)
    with (
        pytest.raises(TVLensError, match="build it for this target"),
        steer_affine(model, wrong, MASK),
    ):
        pass
    with pytest.raises(TVLensError, match="rank must be"):
        StaticAffineATV([0], model.d_model, mlp_width(model), 0)


def test_parameter_count_and_start(tiny):
    model = tiny.model
    L, d, d_mlp = model.n_layers, model.d_model, mlp_width(model)
    for r in (1, 8):
        module = StaticAffineATV(range(L), d, d_mlp, r)
        assert module.trainable_parameters() == L * (r * (d + d_mlp) + d)
    with torch.no_grad():  # U = 0, b = 0: the target untouched at the start, as LoRA's B = 0
        clean = model(TOKENS, attention_mask=MASK)
        got = AffineSteered(model, StaticAffineATV(range(L), d, d_mlp, 8, seed=1))(TOKENS, MASK)
    assert torch.equal(got, clean)
