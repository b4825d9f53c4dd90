"""Last-token patching on a cached prefix equals the full forward pass, copy by copy."""

import pytest
import torch

from tvlens.errors import PromptError
from tvlens.injection import inject
from tvlens.patching import last_token_logits, run_prefix
from tvlens.tasks import sample_prompts, tokenize_prompts


# The whole suite also runs on the post-norm (Gemma-2, OLMo-2) and sliding-window (Gemma-2,
# Mistral; window shorter than the prompts) architectures.
@pytest.fixture
def sharp(sharp_all):
    return sharp_all


@pytest.fixture
def tiny(tiny_all):
    return tiny_all


@pytest.fixture(scope="module")
def mixed_prompts(letters_task):
    """2-shot and 4-shot prompts: different lengths, so left padding is exercised."""
    return sample_prompts(letters_task, k=2, n=3, seed=0) + sample_prompts(
        letters_task, k=4, n=3, seed=1
    )


def _full_last(model, batch):
    with torch.no_grad():
        return model(batch.tokens, attention_mask=batch.attention_mask)[:, -1]


def test_last_token_logits_equal_full_forward(sharp, mixed_prompts):
    model = sharp.model
    batch = tokenize_prompts(mixed_prompts, model, padding_side="left")
    assert len(set(batch.attention_mask.sum(1).tolist())) == 2  # really padded
    full = _full_last(model, batch)

    state = run_prefix(model, batch)
    logits = last_token_logits(model, state, copies=3)
    assert logits.shape == (len(batch), 3, model.spec.d_vocab)
    for c in range(3):
        torch.testing.assert_close(logits[:, c], full, atol=1e-4, rtol=0)
        torch.testing.assert_close(logits[:, c], logits[:, 0], atol=1e-5, rtol=0)

    # Each prompt alone, unpadded, gives the same last-token logits (padding is invisible).
    for i, p in enumerate(mixed_prompts):
        one = tokenize_prompts([p], model)
        torch.testing.assert_close(logits[i, 0], _full_last(model, one)[0], atol=1e-4, rtol=0)

    # The prefix cache is reusable: later calls are not affected by earlier ones.
    again = last_token_logits(model, state, copies=1)
    torch.testing.assert_close(again[:, 0], logits[:, 0], atol=1e-5, rtol=0)
    assert state.cache.get_seq_length() == batch.tokens.shape[1] - 1


def test_run_prefix_rejects_right_padding_and_answers(tiny, mixed_prompts):
    model = tiny.model
    right = tokenize_prompts(mixed_prompts, model, padding_side="right")
    with pytest.raises(PromptError, match="padding_side='left'"):
        run_prefix(model, right)
    with_answer = tokenize_prompts(mixed_prompts, model, padding_side="left", include_answer=True)
    with pytest.raises(PromptError, match="appended answers"):
        run_prefix(model, with_answer)


def test_patches_apply_to_their_copy_only(sharp, mixed_prompts):
    """A no-op patch changes nothing; adding a vector on copy 1 changes copy 1 alone, exactly
    as a full forward pass with that vector added at the last token."""
    model = sharp.model
    batch = tokenize_prompts(mixed_prompts, model, padding_side="left")
    state = run_prefix(model, batch)
    base = last_token_logits(model, state, copies=3)
    noop = last_token_logits(
        model,
        state,
        copies=3,
        patches=[(model.resid_hook(0), lambda a: a), (model.z_hook(1), lambda z: z.clone())],
    )
    torch.testing.assert_close(noop, base, atol=1e-5, rtol=0)

    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))

    def add_on_copy_1(act):
        act[:, 1] = act[:, 1] + 3.0 * v
        return act

    patched = last_token_logits(
        model, state, copies=3, patches=[(model.resid_hook(0), add_on_copy_1)]
    )
    torch.testing.assert_close(patched[:, 0], base[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(patched[:, 2], base[:, 2], atol=1e-5, rtol=0)
    assert (patched[:, 1] - base[:, 1]).abs().max() > 0.1
    with inject(model, v, layer=0, mode="add", scale=3.0):
        ref = _full_last(model, batch)
    torch.testing.assert_close(patched[:, 1], ref, atol=1e-4, rtol=0)


def test_unpacked_fallback_equals_packed_copies(sharp, mixed_prompts, monkeypatch):
    """Models whose attention takes no 4D mask (flash attention) repeat the prefix cache along
    the batch instead of packing copies along the positions: same logits."""
    import tvlens.patching.last_token as lt

    model = sharp.model
    batch = tokenize_prompts(mixed_prompts, model, padding_side="left")
    state = run_prefix(model, batch)

    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))

    def bump(act):  # not a constant shift, which the next layer norm would remove
        act[:, 1] += direction
        return act

    patches = [(model.resid_hook(0, "post"), bump)]
    packed = last_token_logits(model, state, copies=3, patches=patches)
    monkeypatch.setattr(lt, "can_pack", lambda model, n_pos=None: False)
    unpacked = last_token_logits(model, state, copies=3, patches=patches)
    torch.testing.assert_close(unpacked, packed, atol=1e-4, rtol=0)
    assert (packed[:, 1] - packed[:, 0]).abs().max() > 1e-3  # the patch did something
