"""Prefix tuning's start: peft's prefix, initialised from real tokens, is exactly those tokens
as a text prefix (Li & Liang 2021's real-word initialisation), on GPT-2, Llama with
grouped-query attention and NeoX."""

import copy

import pytest
import torch
from peft import get_peft_model

from tvlens.compare.fitting import hf_logits
from tvlens.compare.options import PeftOptions
from tvlens.compare.tuned import init_prefix_from_tokens, peft_config
from tvlens.errors import TVLensError


def test_prefix_from_tokens_equals_text_prefix(tiny):
    n = 3
    pm = get_peft_model(
        copy.deepcopy(tiny.hf),
        peft_config("prefix", PeftOptions(prefix_tokens=n), tiny.hf.config.model_type),
    )
    prefix = torch.tensor([[1, 7, 8]])
    init_prefix_from_tokens(pm, prefix)
    query = torch.tensor([[9, 3, 10, 4], [0, 11, 3, 12]])  # the second row left-padded
    mask = (query != 0).long()
    got = hf_logits(pm, query, mask)
    with torch.no_grad():
        for row in range(2):
            real = query[row][mask[row].bool()].unsqueeze(0)
            ref = tiny.hf(input_ids=torch.cat([prefix, real], 1)).logits[0, n:]
            torch.testing.assert_close(got[row, -real.shape[1] :], ref, atol=1e-4, rtol=1e-4)


def test_prefix_layout_mismatch_is_refused(tiny):
    pm = get_peft_model(
        copy.deepcopy(tiny.hf),
        peft_config("prefix", PeftOptions(prefix_tokens=2), tiny.hf.config.model_type),
    )
    with pytest.raises(TVLensError, match="layout"):
        init_prefix_from_tokens(pm, torch.tensor([[1, 7, 8]]))  # 3 tokens for a 2-token prefix


def test_prefix_needs_enough_real_tokens(tiny, letters_task):
    from tvlens.compare.tuned import prefix_init_ids
    from tvlens.tasks import sample_prompts, tokenize_prompts

    prompts = sample_prompts(letters_task, 0, 2, seed=0, template=tiny.model.template(None))
    ids = prefix_init_ids(prompts, tiny.model, 3)
    first = tokenize_prompts(prompts[:1], tiny.model, "right", include_answer=True).tokens[0]
    assert ids[0].tolist() == first[:3].tolist()  # the first prompt's own tokens, BOS policy
    with pytest.raises(TVLensError, match="Lower prefix_tokens"):
        prefix_init_ids(prompts, tiny.model, 100)
