"""ICL evaluation: known-answer models, and teacher-forced exact match == greedy decoding."""

import numpy as np
import pytest
import torch

from tvlens.evaluation.icl import answer_correctness, evaluate_icl, evaluate_prompts, model_logits
from tvlens.tasks import Example, Task, list_suite, sample_prompts, tokenize_prompts

X_ID = 15  # "x" in the letters vocabulary (see conftest.LETTERS)


def _always_predict_x(hf) -> None:
    """GPT-2 whose output is the same at every position: the final LayerNorm outputs the unit
    vector e_0 (weight 0, bias e_0), and the tied unembedding's column 0 is one-hot on "x"."""
    ln_f, wte = hf.transformer.ln_f, hf.transformer.wte
    ln_f.weight.zero_()
    ln_f.bias.zero_()
    ln_f.bias[0] = 1.0
    wte.weight[:, 0] = 0.0
    wte.weight[X_ID, 0] = 1.0


@pytest.fixture(scope="module")
def x_model(make_tiny, letters_tokenizer):
    return make_tiny("always-x", "gpt2", letters_tokenizer, edit=_always_predict_x, n_layers=1)


LETTERS8 = "abcdefgh"
ALWAYS_X = Task.from_pairs("always_x", [(w, "x") for w in LETTERS8])
NEVER_X = Task.from_pairs("never_x", [(w, "y") for w in LETTERS8])
# Half the answers are "x x" (greedy gets them), half "x y" (right first token, then wrong).
HALF = Task.from_pairs("half", [(w, "x x" if i % 2 else "x y") for i, w in enumerate(LETTERS8)])


def test_known_answer_model_predicts_x_everywhere(x_model):
    model = x_model.model
    with torch.no_grad():
        logits = model(model.to_tokens(["a -> b\nc ->", "h"]))
    assert (logits.argmax(-1)[0] == X_ID).all()
    assert logits[0, -1, X_ID] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_evaluate_icl_known_answers(x_model, side):
    ev = evaluate_icl(x_model.model, [ALWAYS_X, NEVER_X, HALF], k=2, n_prompts=8, padding_side=side)
    assert list(ev.tasks) == ["always_x", "never_x", "half"]
    acc = {name: (t.first_token, t.exact_match, t.n) for name, t in ev.tasks.items()}
    assert acc == {
        "always_x": (1.0, 1.0, 8),
        "never_x": (0.0, 0.0, 8),
        "half": (1.0, 0.5, 8),  # each query used once: exactly the 4 "x x" answers match
    }
    assert ev.first_token() == {"always_x": 1.0, "never_x": 0.0, "half": 1.0}
    assert ev.mean_first_token == pytest.approx(2 / 3)
    assert ev.mean_exact_match == pytest.approx(0.5)
    d = ev.to_dict()
    assert d["k"] == 2 and d["template"] == "arrow"
    assert d["tasks"]["half"] == {"task": "half", "first_token": 1.0, "exact_match": 0.5, "n": 8}


def test_evaluate_icl_on_plain_hf_model(x_model):
    """An HF causal LM plus its tokenizer gives the same result as the loaded model."""
    ev_hf = evaluate_icl(
        x_model.hf, [ALWAYS_X, HALF], k=3, n_prompts=5, tokenizer=x_model.tokenizer
    )
    ev_tv = evaluate_icl(x_model.model, [ALWAYS_X, HALF], k=3, n_prompts=5)
    assert ev_hf == ev_tv
    assert ev_hf.tasks["half"].first_token == 1.0


@pytest.mark.parametrize("side", ["left", "right"])
def test_plain_hf_model_logits_follow_padding(tiny, side, request):
    """model_logits on the plain HF model equals the loaded model at every query position."""
    letters = Task.from_pairs("letters", [(w, w) for w in LETTERS8])
    prompts = sample_prompts(letters, k=3, n=2) + sample_prompts(letters, k=0, n=2)
    batch = tokenize_prompts(prompts, tiny.tokenizer, padding_side=side)
    rows = torch.arange(len(batch))
    with torch.no_grad():
        hf = model_logits(tiny.hf, batch)[rows, batch.query_pos]
        tv = model_logits(tiny.model, batch)[rows, batch.query_pos]
    torch.testing.assert_close(hf, tv, atol=1e-5, rtol=0)


def test_answer_correctness_needs_answers(x_model):
    batch = tokenize_prompts(sample_prompts(ALWAYS_X, 2, 2), x_model.model)
    with pytest.raises(ValueError, match="include_answer=True"):
        answer_correctness(x_model.model, batch)


@pytest.fixture(scope="module")
def symbol_model(make_tiny, symbol_tokenizer):
    return make_tiny("symbols-llama", "llama", symbol_tokenizer, n_layers=2)


def _greedy(hf, prompt_ids: list[int], n: int) -> list[int]:
    """Reference: generate ``n`` tokens one at a time with argmax, no padding, no cache."""
    ids = list(prompt_ids)
    for _ in range(n):
        with torch.no_grad():
            logits = hf(torch.tensor([ids])).logits
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt_ids) :]


def test_exact_match_equals_greedy_decoding(symbol_model):
    """Teacher-forced verdicts (one padded forward pass) equal a manual greedy decoding loop."""
    model, hf, tok = symbol_model.model, symbol_model.hf, symbol_model.tokenizer
    copy = list_suite(n_symbols=8, min_len=2, max_len=4, n_examples=24, seed=0)["copy"]
    prompts = sample_prompts(copy, k=2, n=24, seed=0)
    words = {i: w for w, i in tok.get_vocab().items() if i >= 7}  # not specials / template

    # Besides the task's own answers, ask for the model's greedy continuation (all correct)
    # and for that continuation with its last token changed (first token right, rest wrong).
    # Each case: (prompt, greedy continuation as long as its answer).
    cases = []
    for p in prompts:
        one = tokenize_prompts([p], model)
        g = _greedy(hf, one.tokens[0].tolist(), len(one.answer_ids[0]))
        cases.append((p, g))
        if all(i in words for i in g):
            own = [words[i] for i in g]
            wrong = [*own[:-1], "s0" if own[-1] != "s0" else "s1"]
            cases.append((p.with_query(Example(p.query.input, " ".join(own))), g))
            cases.append((p.with_query(Example(p.query.input, " ".join(wrong))), g))
    cases = [cases[i] for i in np.random.default_rng(0).permutation(len(cases))]

    want_first, want_exact = [], []
    for p, g in cases:
        answer = list(tokenize_prompts([p], model).answer_ids[0])
        assert len(answer) == len(g) > 1
        want_first.append(g[0] == answer[0])
        want_exact.append(g == answer)
    want_first, want_exact = np.array(want_first), np.array(want_exact)
    # The cases mix all three outcomes: exact, first token only, and wrong from the start.
    assert want_exact.sum() >= 8
    assert (want_first & ~want_exact).sum() >= 8
    assert (~want_first).sum() >= 8

    for side in ("left", "right"):
        first, exact = evaluate_prompts(
            model, [p for p, _ in cases], batch_size=16, padding_side=side
        )
        np.testing.assert_array_equal(first, want_first)
        np.testing.assert_array_equal(exact, want_exact)
