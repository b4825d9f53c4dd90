"""Whole-answer scoring on tiny models: greedy decoding against HF ``generate`` (with and
without a steering hook), teacher forcing equal to greedy exact match, first-token flags and
KL to a reference."""

from functools import partial

import pytest
import torch

from tvlens.evaluation.scoring import (
    ScoringError,
    answer_logits,
    first_token_flags,
    greedy_decode,
    greedy_exact_match,
    kl_to_reference,
    prompt_tokens,
    teacher_forced_whole_answer,
)
from tvlens.evaluation.stats import hierarchical_bootstrap
from tvlens.injection.inject import inject
from tvlens.injection.intervention import Write, apply_intervention
from tvlens.tasks import Task, sample_prompts, tokenize_prompts

# Multi-token answers (the word tokenizer gives one token per letter).
PAIRS = [("a", "b c"), ("c", "d"), ("e", "f g h"), ("g", "h"), ("x", "y a"), ("b", "a"),
         ("d", "e"), ("f", "x y")]  # fmt: skip
LAYER = 1


@pytest.fixture(scope="module")
def multi_task() -> Task:
    return Task.from_pairs("multi", PAIRS)


@pytest.fixture(scope="module")
def prompts(multi_task):
    return sample_prompts(multi_task, k=2, n=8, seed=0) + sample_prompts(
        multi_task, k=3, n=4, seed=1
    )


def _vector(model, seed=0, size=6.0):
    return size * torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed))


def _hf_blocks(hf):
    for path in ("transformer.h", "model.layers", "gpt_neox.layers"):
        obj = hf
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise AssertionError(f"no blocks found on {type(hf).__name__}")


def _hf_generate(tiny, tokens, mask, n_new, vector=None, every_step=False, everywhere=False):
    """The reference: HF ``generate`` (key/value cache) with a forward hook that adds
    ``vector`` to block LAYER's output at the last position (or at every position computed
    in that forward), on the prompt's forward only or on every forward."""

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if every_step or hidden.shape[1] > 1:  # the prompt's forward has every position
            hidden = hidden.clone()
            if everywhere:
                hidden += vector
            else:
                hidden[:, -1] += vector
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = _hf_blocks(tiny.hf)[LAYER].register_forward_hook(hook) if vector is not None else None
    try:
        with torch.no_grad():
            out = tiny.hf.generate(
                input_ids=tokens, attention_mask=mask, max_new_tokens=n_new, do_sample=False,
                pad_token_id=tiny.tokenizer.pad_token_id, eos_token_id=None,
            )  # fmt: skip
    finally:
        if handle is not None:
            handle.remove()
    return out[:, tokens.shape[1] :]


def _hooks_left(model) -> int:
    return sum(len(hp._forward_hooks) for hp in model.bridge.hook_dict.values())


@pytest.mark.parametrize("steer", ["none", "first_step", "every_step"])
def test_greedy_decode_equals_hf_generate(sharp, prompts, steer):
    model = sharp.model
    batch = tokenize_prompts(prompts, model)
    tokens, mask = prompt_tokens(model, batch)
    v = _vector(model)
    if steer == "none":
        got, _ = greedy_decode(model, batch, 4)
        want = _hf_generate(sharp, tokens, mask, 4)
    else:
        ctx = lambda: inject(model, v, layer=LAYER, mode="add")  # noqa: E731
        got, _ = greedy_decode(model, batch, 4, ctx, steer=steer)
        want = _hf_generate(sharp, tokens, mask, 4, v, every_step=steer == "every_step")
        plain, _ = greedy_decode(model, batch, 4)
        assert not torch.equal(got, plain)  # the vector changes what is generated
    torch.testing.assert_close(got, want)
    assert _hooks_left(model) == 0


def test_an_intervention_at_every_position_and_step_equals_hf_generate(sharp, prompts):
    # ICV-like: a write at every position, kept on while generating.
    model = sharp.model
    batch = tokenize_prompts(prompts, model)
    tokens, mask = prompt_tokens(model, batch)
    v = _vector(model, 4, size=3.0)
    write = Write(LAYER, v, point="resid_post", op="add", positions="all")
    got, _ = greedy_decode(model, batch, 4, partial(apply_intervention, model, [write]),
                           steer="every_step")  # fmt: skip
    want = _hf_generate(sharp, tokens, mask, 4, v, every_step=True, everywhere=True)
    torch.testing.assert_close(got, want)
    assert not torch.equal(got, greedy_decode(model, batch, 4)[0])
    assert _hooks_left(model) == 0


def test_steering_policies_differ_after_the_first_token(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model)
    ctx = lambda: inject(model, _vector(model, 1), layer=LAYER, mode="add")  # noqa: E731
    first, _ = greedy_decode(model, batch, 3, ctx, steer="first_step")
    every, _ = greedy_decode(model, batch, 3, ctx, steer="every_step")
    torch.testing.assert_close(first[:, 0], every[:, 0])  # the same first forward
    assert not torch.equal(first[:, 1:], every[:, 1:])


@pytest.mark.parametrize("steered", [None, LAYER, -1])
def test_teacher_forcing_equals_greedy_exact_match(tiny, prompts, steered):
    # -1: a write at the last block's output, which the unembedding reads directly.
    model = tiny.model
    batch = tokenize_prompts(prompts, model)
    v = _vector(model, 2)
    ctx = partial(inject, model, v, steered, mode="add") if steered is not None else None
    scores = greedy_exact_match(model, batch, intervention_ctx=ctx)
    # Targets the model writes (all right), the task's answers, and the model's own
    # continuation with its last token changed (first right, whole wrong when longer).
    own = [g[: len(a)] for g, a in zip(scores.generated, batch.answer_ids, strict=True)]
    vocab = len(tiny.tokenizer)
    changed = [(*g[:-1], (g[-1] + 1) % vocab) for g in own]
    for answers, exact_expected in ((own, True), (None, None), (changed, None)):
        s = greedy_exact_match(model, batch, answers, intervention_ctx=ctx)
        first, exact = teacher_forced_whole_answer(model, batch, answers, intervention_ctx=ctx)
        assert exact.tolist() == s.exact.tolist()
        assert first.tolist() == s.first_token.tolist()
        if exact_expected:
            assert s.exact.all()
    long_rows = [len(a) > 1 for a in changed]
    assert any(long_rows)
    # ``exact`` is from the last targets (changed): wrong wherever the answer is longer.
    assert not any(e for e, r in zip(exact.tolist(), long_rows, strict=True) if r)
    assert _hooks_left(model) == 0


def test_right_padded_batches_with_answers_score_alike(tiny, prompts):
    model = tiny.model
    left = tokenize_prompts(prompts, model)
    right = tokenize_prompts(prompts, model, padding_side="right", include_answer=True)
    a, b = greedy_exact_match(model, left), greedy_exact_match(model, right)
    assert a.generated == b.generated and a.exact.tolist() == b.exact.tolist()
    assert a.predictions == b.predictions
    # In pieces of 5 (the last of 2): the same scores and logits as in one piece.
    ctx = partial(inject, model, _vector(model, 5), LAYER, mode="add")
    whole = greedy_exact_match(model, left, intervention_ctx=ctx, batch_size=None)
    parts = greedy_exact_match(model, right, intervention_ctx=ctx, batch_size=5)
    assert whole.generated == parts.generated
    torch.testing.assert_close(whole.logits, parts.logits, atol=1e-4, rtol=1e-4)
    tf_whole = teacher_forced_whole_answer(model, left, intervention_ctx=ctx, batch_size=None)
    tf_parts = teacher_forced_whole_answer(model, left, intervention_ctx=ctx, batch_size=5)
    assert [t.tolist() for t in tf_whole] == [t.tolist() for t in tf_parts]
    torch.testing.assert_close(answer_logits(model, left, ctx, batch_size=5), whole.logits,
                               atol=1e-4, rtol=1e-4)  # fmt: skip


def test_known_answers_and_records(sharp, prompts):
    model = sharp.model
    batch = tokenize_prompts(prompts, model)
    own = greedy_exact_match(model, batch)
    answers = [g[: len(a)] for g, a in zip(own.generated, batch.answer_ids, strict=True)]
    s = greedy_exact_match(model, batch, answers, max_new_tokens=5)
    assert s.exact.all() and s.first_token.all()
    assert all(len(g) == 5 for g in s.generated)
    assert all("\n" not in p and p == p.strip() for p in s.predictions)
    rows = s.records("tv", seed=None)
    assert rows[0]["method"] == "tv" and rows[0]["value"] == 1.0
    assert {r["query"] for r in rows} <= {x for x, _ in PAIRS}
    unique = list({r["query"]: r for r in rows}.values())  # the two samples share queries
    res = hierarchical_bootstrap(unique, "tv", n_resamples=100)
    assert res.estimate == 1.0


def test_exceptions_inside_decoding_leave_no_hooks(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model)
    bad = lambda: inject(model, torch.zeros(3, model.d_model), layer=LAYER)  # noqa: E731
    with pytest.raises(Exception, match="rows"):
        greedy_exact_match(model, batch, intervention_ctx=bad)
    assert _hooks_left(model) == 0
    with pytest.raises(ScoringError, match="max_new_tokens"):
        greedy_exact_match(model, batch, max_new_tokens=1)
    with pytest.raises(ScoringError, match="steer"):
        greedy_exact_match(model, batch, steer="always")


class StubTokenizer:
    """BPE-like: a number gets a bare space token first (" 7" -> " ", "7"); a word gets
    " " + its first letter, then the rest (" Ostrich" -> " O", "strich")."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def _id(self, piece):
        return self.vocab.setdefault(piece, len(self.vocab))

    def __call__(self, text, add_special_tokens=False):
        word = text[1:]
        pieces = [" ", word] if word.isdigit() else [" " + word[0], word[1:]]
        return {"input_ids": [self._id(p) for p in pieces if p]}

    def decode(self, ids):
        inv = {i: p for p, i in self.vocab.items()}
        return "".join(inv[i] for i in ids)


def test_first_token_flags_whitespace_and_sibling_tasks():
    answers = {
        "next_item": ["7", "12"],
        "capitalize": ["Ostrich", "Apple"],
        "uppercase_first": ["Owl", "Bee"],
    }
    flags = {(f.task, f.answer): f for f in first_token_flags(answers, StubTokenizer())}
    assert flags["next_item", "7"].whitespace and flags["next_item", "7"].flagged
    assert flags["capitalize", "Ostrich"].shared_with == ("uppercase_first",)
    assert flags["uppercase_first", "Owl"].shared_with == ("capitalize",)
    assert not flags["capitalize", "Apple"].flagged
    assert flags["capitalize", "Apple"].first_token == " A"


def test_first_token_flags_on_a_batch(tiny):
    model = tiny.model
    a = Task.from_pairs("copy", [("a", "a"), ("b", "b"), ("c", "c"), ("d", "d")])
    b = Task.from_pairs("shift", [("a", "b c"), ("b", "x"), ("c", "d"), ("d", "e")])
    batch = tokenize_prompts(
        sample_prompts(a, 1, 3, seed=0) + sample_prompts(b, 1, 3, seed=0), model
    )
    flags = first_token_flags(batch, model.tokenizer)
    for f, ids in zip(flags, batch.answer_ids, strict=True):
        other = [g for g, i2 in zip(batch.task_names, batch.answer_ids, strict=True)
                 if i2[0] == ids[0] and g != f.task]  # fmt: skip
        assert f.shared_with == tuple(sorted(set(other)))
        assert not f.whitespace


def test_kl_to_reference_known_values():
    p = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    q = torch.tensor([[torch.log(torch.tensor(3.0)), 0.0], [1.0, 2.0]])
    kl = kl_to_reference(p, q)
    assert kl[0] == pytest.approx(0.5 * torch.log(torch.tensor(4 / 3)).item(), abs=1e-6)
    assert kl[1] == pytest.approx(0.0, abs=1e-7)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 11, generator=g), torch.randn(5, 11, generator=g)
    ref = torch.nn.functional.kl_div(
        torch.log_softmax(b, -1), torch.log_softmax(a, -1), log_target=True, reduction="none"
    ).sum(-1)
    torch.testing.assert_close(kl_to_reference(a, b), ref)
    assert not torch.allclose(kl_to_reference(a, b), kl_to_reference(b, a))
    # ScoringError for a user; under the tests' type checker the annotation refuses it first.
    with pytest.raises(Exception, match="shapes|d_vocab"):
        kl_to_reference(a, b[:, :5])


def test_answer_logits_are_the_query_position_and_kl_zero_without_steering(tiny, prompts):
    model = tiny.model
    batch = tokenize_prompts(prompts, model, padding_side="right")
    with torch.no_grad():
        full = model(batch.tokens, attention_mask=batch.attention_mask)
    want = full[torch.arange(len(batch)), batch.query_pos].float()
    got = answer_logits(model, batch)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert kl_to_reference(got, answer_logits(model, batch)).abs().max() < 1e-6
    v = _vector(model, 3)
    steered = answer_logits(model, batch, lambda: inject(model, v, layer=LAYER, mode="add"))
    assert kl_to_reference(got, steered).min() > 0
    # greedy_exact_match keeps the same logits: KL needs no extra forward.
    ctx = partial(inject, model, v, LAYER, mode="add")
    scores = greedy_exact_match(model, batch, intervention_ctx=ctx)
    torch.testing.assert_close(scores.logits, steered, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_greedy_decode_equals_hf_generate_on_newer_architectures(sharp_extra, prompts):
    # Post-norms (Gemma-2, OLMo-2), sliding windows shorter than the prompts (Gemma-2/3,
    # Mistral), q/k norms and biases (Qwen2/3): the re-run with replay still equals the cache.
    model = sharp_extra.model
    batch = tokenize_prompts(prompts, model)
    tokens, mask = prompt_tokens(model, batch)
    v = _vector(model)
    got, _ = greedy_decode(model, batch, 4, partial(inject, model, v, LAYER, mode="add"))
    torch.testing.assert_close(got, _hf_generate(sharp_extra, tokens, mask, 4, v))
