"""inject(): the hooked residual holds exactly the written vector, and the hook is gone after the
block, also when the block raises."""

import pytest
import torch

from tvlens.errors import LayerError
from tvlens.extraction import TaskVector, VectorMismatchError
from tvlens.injection import inject
from tvlens.tasks import sample_prompts, tokenize_prompts


@pytest.fixture(scope="module")
def prompts(letters_task):
    return sample_prompts(letters_task, k=0, n=2, seed=0) + sample_prompts(
        letters_task, k=3, n=3, seed=1
    )


def _resid(model, batch, layer, where="post"):
    """``(logits, residual)`` of a full pass, the residual at ``layer`` via run_with_cache."""
    name = f"blocks.{layer}.hook_resid_{where}"
    with torch.no_grad():
        logits, cache = model.run_with_cache(
            batch.tokens, attention_mask=batch.attention_mask, names_filter=[name]
        )
    return logits, cache[name]


def _vec(model, seed=0, n=None):
    shape = (model.d_model,) if n is None else (n, model.d_model)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _hooks_left(model) -> set[str]:
    """Canonical names of the hook points that hold a forward hook (TransformerLens keeps them
    in ``HookPoint.fwd_hooks``, torch in ``_forward_hooks``; aliases share one HookPoint)."""
    return {hp.name for hp in model.bridge.hook_dict.values() if hp.fwd_hooks or hp._forward_hooks}


def _canonical(model, name: str) -> str:
    return model.bridge.hook_dict[name].name


@pytest.mark.parametrize("layer", [0, 2])
def test_replace_writes_vector_at_last_position(tiny, prompts, layer):
    model = tiny.model
    batch = tokenize_prompts(prompts, model, padding_side="left")
    clean_logits, clean = _resid(model, batch, layer)
    v = _vec(model)
    with inject(model, v, layer=layer, mode="replace") as m:
        assert m is model
        logits, got = _resid(model, batch, layer)
    assert torch.equal(got[:, -1], v.expand(len(batch), -1))
    assert torch.equal(got[:, :-1], clean[:, :-1])
    # Real tokens before the query do not see it (pad positions may: their attention rows are
    # fully masked, which HF turns into attending everywhere).
    before = batch.attention_mask.bool().clone()
    before[:, -1] = False
    assert torch.equal(logits[before], clean_logits[before])
    assert (logits[:, -1] - clean_logits[:, -1]).abs().max() > 1e-3
    assert _hooks_left(model) == set()


def test_add_with_scale(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model, padding_side="left")
    _, clean = _resid(model, batch, 1)
    v = _vec(model, 1)
    with inject(model, v, layer=1, mode="add", scale=2.5):
        _, got = _resid(model, batch, 1)
    torch.testing.assert_close(got[:, -1], clean[:, -1] + 2.5 * v, atol=1e-6, rtol=0)
    assert torch.equal(got[:, :-1], clean[:, :-1])
    # The residual entering block 1 (where="pre") is written instead.
    _, clean_pre = _resid(model, batch, 1, "pre")
    with inject(model, v, layer=1, mode="add", scale=-1.0, where="pre"):
        _, got_pre = _resid(model, batch, 1, "pre")
    torch.testing.assert_close(got_pre[:, -1], clean_pre[:, -1] - v, atol=1e-6, rtol=0)


def test_all_positions(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model, padding_side="right")
    _, clean = _resid(model, batch, 0)
    v = _vec(model, 2)
    with inject(model, v, layer=0, positions="all"):
        _, got = _resid(model, batch, 0)
    assert torch.equal(got, v.expand_as(got))
    per_row = _vec(model, 3, n=len(batch))
    with inject(model, per_row, layer=0, mode="add", scale=0.5, positions="all"):
        _, got = _resid(model, batch, 0)
    torch.testing.assert_close(got, clean + 0.5 * per_row[:, None], atol=1e-6, rtol=0)


def test_per_row_positions_under_right_padding(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model, padding_side="right")
    assert len(set(batch.query_pos.tolist())) == 2
    rows = torch.arange(len(batch))
    _, clean = _resid(model, batch, 1)
    vs = _vec(model, 4, n=len(batch))
    with inject(model, vs, layer=1, positions=batch.query_pos):
        _, got = _resid(model, batch, 1)
    assert torch.equal(got[rows, batch.query_pos], vs)
    untouched = torch.ones(got.shape[:2], dtype=torch.bool)
    untouched[rows, batch.query_pos] = False
    assert torch.equal(got[untouched], clean[untouched])

    # Right padding, query position per row == each prompt alone (left padded) with "last".
    v = _vec(model, 5)
    with inject(model, v, layer=1, mode="add", positions=batch.query_pos):
        with torch.no_grad():
            right = model(batch.tokens, attention_mask=batch.attention_mask)[rows, batch.query_pos]
    left_batch = tokenize_prompts(prompts, model, padding_side="left")
    with inject(model, v, layer=1, mode="add"):
        with torch.no_grad():
            left = model(left_batch.tokens, attention_mask=left_batch.attention_mask)[:, -1]
    torch.testing.assert_close(right, left, atol=1e-4, rtol=0)


def test_task_vector_layers(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model)
    vecs = _vec(model, 6, n=3)
    tv = TaskVector(vecs, (0, 1, 2), model.name, "letters", "hendel", 4)
    with inject(model, tv, layer=1):
        _, got = _resid(model, batch, 1)
    assert torch.equal(got[:, -1], vecs[1].expand(len(batch), -1))
    with pytest.raises(VectorMismatchError, match="pass layer="):
        with inject(model, tv):
            pass
    # A one-layer vector goes to its own layer by default, or to any layer given.
    one = tv.select(2)
    with inject(model, one):
        _, got = _resid(model, batch, 2)
    assert torch.equal(got[:, -1], vecs[2].expand(len(batch), -1))
    with inject(model, one, layer=0):
        _, got = _resid(model, batch, 0)
    assert torch.equal(got[:, -1], vecs[2].expand(len(batch), -1))


def test_hooks_removed_after_block_and_after_exception(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model)
    before, _ = _resid(model, batch, 0)
    v = _vec(model, 7)
    with inject(model, v, layer=1):
        inside, _ = _resid(model, batch, 0)
        assert _hooks_left(model) == {_canonical(model, model.resid_hook(1))}
    assert not torch.equal(inside, before)
    assert _hooks_left(model) == set()
    assert torch.equal(_resid(model, batch, 0)[0], before)

    with pytest.raises(RuntimeError, match="boom"):
        with inject(model, v, layer=1, mode="add", scale=3.0):
            assert not torch.equal(_resid(model, batch, 0)[0], before)
            raise RuntimeError("boom")
    assert _hooks_left(model) == set()
    assert torch.equal(_resid(model, batch, 0)[0], before)

    # The hook itself raising (positions for 2 rows, batch of 5) also leaves nothing behind.
    with pytest.raises(VectorMismatchError, match="positions has 2 rows"):
        with inject(model, v, layer=1, positions=torch.tensor([0, 1])):
            _resid(model, batch, 0)
    assert _hooks_left(model) == set()
    assert torch.equal(_resid(model, batch, 0)[0], before)


def test_bad_arguments(tiny, make_tiny, letters_tokenizer):
    model = tiny.model
    with pytest.raises(VectorMismatchError, match="size 31"):
        with inject(model, torch.zeros(31), layer=0):
            pass
    for layer in (model.n_layers, -model.n_layers - 1):
        with pytest.raises(LayerError, match="out of range"):
            with inject(model, torch.zeros(model.d_model), layer=layer):
                pass
    with pytest.raises(ValueError, match="layer="):
        with inject(model, torch.zeros(model.d_model)):
            pass
    small = TaskVector(torch.zeros(1, 16), (0,), model.name, "t", "fv", 1)
    with pytest.raises(VectorMismatchError, match="d_model=16"):
        with inject(model, small):
            pass
    assert _hooks_left(model) == set()


def test_resid_mid_exists_except_on_parallel_blocks(tiny, prompts):
    """GPT-NeoX runs attention and MLP in parallel: no residual between them to write."""
    model = tiny.model
    v = _vec(model, 8)
    if tiny.arch == "neox":
        with pytest.raises(LayerError, match="parallel"):
            with inject(model, v, layer=0, where="mid"):
                pass
        return
    batch = tokenize_prompts(prompts, model)
    with inject(model, v, layer=0, where="mid"):
        _, got = _resid(model, batch, 0, "mid")
    assert torch.equal(got[:, -1], v.expand(len(batch), -1))
