"""The model-family records: each builds its family, its LoRA targets and residual write sites
name real matrices of that family, and the flags it states (post-norm, sliding window) agree
with what tvlens detects on the loaded model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tvlens.models import adapter
from tvlens.models.archs import ARCHITECTURES, POST_NORM_ARCHITECTURES
from tvlens.models.families import (
    families,
    family_of_model_type,
    get_family,
    lora_query_value,
    register_family,
    residual_write_sites,
)
from tvlens.models.hf import build_hf_model


def _lora_modules(hf, targets, blocks=None) -> list[str]:
    """Names of the modules peft puts a LoRA adapter on (``targets``, in ``blocks``)."""
    from peft import LoraConfig, get_peft_model

    fam = family_of_model_type(hf.config.model_type)
    cfg = LoraConfig(r=1, target_modules=targets, layers_to_transform=blocks,
                     fan_in_fan_out=fam is not None and fam.conv1d)  # fmt: skip
    peft = get_peft_model(hf, cfg)
    return [n for n, m in peft.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)]


def test_the_registry_is_the_architectures_in_order():
    assert tuple(families()) == ARCHITECTURES
    assert POST_NORM_ARCHITECTURES == ("gemma2", "olmo2", "gemma3")
    assert get_family("neox").model_type == "gpt_neox"
    assert family_of_model_type("gpt_neox") is get_family("neox")
    assert get_family("nope") is None and family_of_model_type("nope") is None


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_record_builds_its_family_and_names_its_matrices(arch):
    fam = get_family(arch)
    hf = build_hf_model(arch, 12, n_layers=2, d_model=16, n_heads=2, n_ctx=16, seed=0)
    assert hf.config.model_type == fam.model_type
    linear = {n.rsplit(".", 1)[-1] for n, m in hf.named_modules() if len(list(m.children())) == 0}
    assert set(fam.lora_targets) <= linear and set(fam.lora_query_value) <= linear
    # fine-tuning's targets: every matrix of the chosen block, none of the others
    tuned = _lora_modules(build_hf_model(arch, 12, n_layers=2, d_model=16, n_heads=2, n_ctx=16),
                          list(fam.lora_targets), blocks=[1])  # fmt: skip
    assert len(tuned) >= len(fam.lora_targets) and all(".1." in n for n in tuned)
    # the residual write sites: one MLP output projection per block, nothing in attention
    sites = _lora_modules(hf, residual_write_sites(fam.model_type))
    assert len(sites) == 2, sites
    assert all("mlp" in n and "attn" not in n and "attention" not in n for n in sites), sites


def test_a_model_type_without_record_gets_llama_names():
    assert lora_query_value("phi3_like") == ["q_proj", "v_proj"]
    assert residual_write_sites("phi3_like") == ["down_proj"]
    assert (
        lora_query_value("gpt2") == ["c_attn"]
        and residual_write_sites("gpt2") == r".*\.mlp\.c_proj"
    )
    assert residual_write_sites("gpt_neox") == ["dense_4h_to_h"]


def test_register_family_refuses_a_second_record_under_a_taken_name():
    gpt2 = get_family("gpt2")
    assert register_family(gpt2) is gpt2  # the same record again: harmless
    with pytest.raises(ValueError, match="already registered"):
        register_family(dataclasses.replace(gpt2, post_norm=True))


def test_detected_post_norm_and_sliding_window_agree_with_the_record(tiny_all):
    """Patching decides its shortcuts from the loaded model (``hook_attn_out``'s target, the
    config's attention span); the record states what the family should show."""
    fam = family_of_model_type(adapter.hf_config(tiny_all.model.bridge).model_type)
    assert fam is get_family(tiny_all.arch)
    target = adapter.block_hook_target(tiny_all.model.bridge.blocks[0], "hook_attn_out")
    assert (target == "ln1_post.hook_out") is fam.post_norm
    span = adapter.attention_span(tiny_all.model.bridge)
    assert span is None or fam.sliding_window
    if fam.sliding_window and "sliding_window" in tiny_all.built:
        assert span == tiny_all.built["sliding_window"]


def test_build_hf_model_is_seeded():
    a = build_hf_model("qwen3", 12, n_layers=1, d_model=16, n_heads=2, n_ctx=16, seed=3)
    b = build_hf_model("qwen3", 12, n_layers=1, d_model=16, n_heads=2, n_ctx=16, seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
