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


def test_old_names_still_work_with_a_deprecation_warning(model, letters_task):
    from tvlens.extraction import function_vector
    from tvlens.patching import patching_prompts
    from tvlens.tasks import TaskSuite

    suite = TaskSuite("letters", (letters_task,))
    new = patching_prompts(model, suite, k=2, n_prompts=2)
    with pytest.warns(DeprecationWarning, match="n_per_task= is renamed n_prompts="):
        old = patching_prompts(model, suite, k=2, n_per_task=2)
    assert torch.equal(old[0].tokens, new[0].tokens)
    with pytest.raises(ConfigError, match="pass only n_prompts"):
        patching_prompts(model, suite, k=2, n_prompts=2, n_per_task=3)
    tv, _ = function_vector(model, letters_task, k=2, n_prompts=2, top_k_heads=3, progress=False)
    with pytest.warns(DeprecationWarning, match="top_k= is renamed top_k_heads="):
        tv_old, _ = function_vector(model, letters_task, k=2, n_prompts=2, top_k=3, progress=False)
    torch.testing.assert_close(tv.vectors, tv_old.vectors)
