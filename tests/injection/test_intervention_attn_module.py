"""The ``attn_module`` point: the attention module's own output, before the norm that Gemma-2
and OLMo-2 apply after attention (the tensor state vectors replace); on pre-norm blocks the
same tensor as ``attn_out``."""

import pytest
import torch

from tvlens.injection.intervention import Write, apply_intervention
from tvlens.tasks import sample_prompts, tokenize_prompts


@pytest.mark.parametrize("arch", ["gpt2", "gemma2"])
def test_attn_module_replace_writes_before_the_post_norm(arch, make_tiny, letters_tokenizer,
                                                         letters_task):  # fmt: skip
    model = make_tiny(arch, arch, letters_tokenizer).model
    batch = tokenize_prompts(sample_prompts(letters_task, k=2, n=2, seed=0), model)
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    names = [model.attn_module_hook(1), model.attn_out_hook(1)]
    with torch.no_grad(), apply_intervention(model, [Write(1, v, point="attn_module",
                                                           op="replace")]):  # fmt: skip
        _, cache = model.run_with_cache(
            batch.tokens, attention_mask=batch.attention_mask, names_filter=names
        )
    torch.testing.assert_close(cache[names[0]][:, -1], v.expand(2, -1))
    post_norm = not torch.allclose(cache[names[1]][:, -1], v.expand(2, -1))
    assert post_norm == (arch == "gemma2")  # Gemma-2 norms the written value; GPT-2 does not
    assert not [hp.name for hp in model.bridge.hook_dict.values() if hp.fwd_hooks]
