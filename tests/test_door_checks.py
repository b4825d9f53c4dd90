"""Arguments checked at the door: one TVLensError naming the argument, before any work."""

import pytest
import torch

from tvlens.errors import ConfigError, TVLensError
from tvlens.injection.inject import inject
from tvlens.patching import patch
from tvlens.patching.metrics import AnswerProb


@pytest.fixture(scope="module")
def model(make_tiny, letters_tokenizer):
    return make_tiny("gpt2", "gpt2", letters_tokenizer).model


@pytest.mark.parametrize("max_batch", [0, -3, True])
def test_patch_refuses_a_bad_max_batch(model, max_batch):
    tokens = model.to_tokens(["a -> b", "c -> d"])
    with pytest.raises(ConfigError, match="max_batch must be an integer >= 1"):
        patch(model, tokens, tokens, AnswerProb(torch.tensor([7, 7])), "resid", max_batch=max_batch)


def test_inject_refuses_a_vector_batch_that_does_not_match(model):
    tokens = model.to_tokens(["a -> b", "c -> d", "e -> f"])
    rows = torch.zeros(2, model.d_model)
    with pytest.raises(TVLensError, match="vector has 2 rows .* the batch has 3 prompts"):
        with inject(model, rows, layer=1), torch.no_grad():
            model(tokens)
    with torch.no_grad():  # the hook is gone after the error
        torch.testing.assert_close(model(tokens), model(tokens))
        assert not any(h.fwd_hooks for h in model.bridge.hook_dict.values())
    with pytest.raises(TVLensError, match=r"shape \(1, 2, 32\)"):
        with inject(model, torch.zeros(1, 2, model.d_model), layer=1):
            pass
