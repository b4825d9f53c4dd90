"""On SmolLM2-135M (a real tokenizer: prompts of different token lengths), tvlens's patching
of a left-padded batch gives what patching each prompt alone gives. (TransformerLens's own
patching functions take no attention mask, so on such a batch they attend to the pads.)"""

from __future__ import annotations

import pytest
import torch

from tvlens.patching import AnswerProb, patch
from tvlens.tasks import get_suite, sample_prompts, tokenize_prompts

LAYERS = [0, 14, 29]


@pytest.fixture(scope="module")
def prompts():
    suite = get_suite("words")
    ps = sample_prompts(suite["antonyms"], 3, 2, seed=0) + sample_prompts(
        suite["country_capital"], 3, 2, seed=1
    )
    return ps


@pytest.mark.smollm2
@pytest.mark.parametrize("positions", ["last", "all"])
def test_padded_batch_equals_each_prompt_alone(smollm2, prompts, positions):
    batch = tokenize_prompts(prompts, smollm2, padding_side="left")
    assert len(set(batch.attention_mask.sum(1).tolist())) > 1  # really padded
    got = patch(smollm2, None, batch, AnswerProb.from_batch(batch), "heads", positions,
                layers=LAYERS, source="zero")  # fmt: skip
    alone = []
    for p in prompts:
        one = tokenize_prompts([p], smollm2, padding_side="left")
        res = patch(smollm2, None, one, AnswerProb.from_batch(one), "heads", positions,
                    layers=LAYERS, source="zero")  # fmt: skip
        alone.append(res.values)
    expected = torch.stack(alone).mean(0)
    assert got.values.shape == expected.shape == (len(LAYERS), smollm2.n_heads)
    torch.testing.assert_close(got.values, expected, atol=2e-5, rtol=1e-4)
    assert float(expected.abs().max()) > 1e-3  # the patches do something
