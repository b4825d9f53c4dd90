"""ICL prompts: rendering, sampling, corrupted variants and tokenization under both paddings."""

import inspect
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from jaxtyping import TypeCheckError

from tvlens.errors import PromptError
from tvlens.tasks import (
    TEMPLATES,
    Example,
    ICLPrompt,
    dummy_query_variants,
    latent_mapping_suite,
    list_suite,
    null_task,
    sample_prompts,
    shuffled_label_variants,
    tokenize_prompts,
)

E = Example


# Three prompts of different lengths, tokenized by hand with the letters vocabulary:
# <pad>=0 <bos>=1 <unk>=2 ->=3 \n=4 Q:=5 A:=6 a=7 b=8 c=9 d=10 e=11 f=12 g=13 h=14 x=15 y=16.
P1 = ICLPrompt("letters", (E("a", "b"), E("c", "d")), E("e", "f"))  # a -> b\nc -> d\ne ->
P2 = ICLPrompt("letters", (E("g h", "x"), E("a", "b")), E("c d", "y"))  # g h -> x\na -> b\nc d ->
P3 = P1.zero_shot()  # e ->
PROMPTS = [P1, P2, P3]
IDS = [
    [1, 7, 3, 8, 4, 9, 3, 10, 4, 11, 3],
    [1, 13, 14, 3, 15, 4, 7, 3, 8, 4, 9, 10, 3],
    [1, 11, 3],
]
ANSWERS = [(12,), (16,), (12,)]


def test_letters_vocabulary_order(letters_tokenizer):
    vocab = letters_tokenizer.get_vocab()
    expected = ["<pad>", "<bos>", "<unk>", "->", "\n", "Q:", "A:", *"abcdefghxy"]
    assert sorted(vocab, key=vocab.get) == expected
    assert list(vocab.values()) and sorted(vocab.values()) == list(range(17))


def test_prompt_text():
    assert P1.text == "a -> b\nc -> d\ne ->"
    assert P2.text == "g h -> x\na -> b\nc d ->"
    assert P3.text == "e ->"
    assert (P1.k, P3.k, P1.answer) == (2, 0, "f")


def test_left_padding_by_hand(letters_tokenizer):
    batch = tokenize_prompts(PROMPTS, letters_tokenizer, padding_side="left")
    assert batch.tokens.tolist() == [
        [0, 0, 1, 7, 3, 8, 4, 9, 3, 10, 4, 11, 3],
        [1, 13, 14, 3, 15, 4, 7, 3, 8, 4, 9, 10, 3],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 11, 3],
    ]
    assert batch.attention_mask.tolist() == [
        [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1] * 13,
        [0] * 10 + [1, 1, 1],
    ]
    assert batch.query_pos.tolist() == [12, 12, 12]
    assert batch.answer_ids == ANSWERS
    assert batch.answer_first.tolist() == [12, 16, 12]
    assert batch.padding_side == "left" and not batch.include_answer
    assert batch.answers == ["f", "y", "f"]
    assert batch.texts == [p.text for p in PROMPTS]
    assert batch.task_names == ["letters"] * 3
    assert len(batch) == 3 and batch.single_token_answers


def test_right_padding_by_hand(letters_tokenizer):
    batch = tokenize_prompts(PROMPTS, letters_tokenizer, padding_side="right")
    assert batch.tokens.tolist() == [
        [1, 7, 3, 8, 4, 9, 3, 10, 4, 11, 3, 0, 0],
        [1, 13, 14, 3, 15, 4, 7, 3, 8, 4, 9, 10, 3],
        [1, 11, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert batch.attention_mask.tolist() == [
        [1] * 11 + [0, 0],
        [1] * 13,
        [1, 1, 1] + [0] * 10,
    ]
    assert batch.query_pos.tolist() == [10, 12, 2]
    assert batch.answer_ids == ANSWERS
    assert batch.answer_first.tolist() == [12, 16, 12]


@pytest.mark.parametrize("side", ["left", "right"])
def test_query_pos_is_last_prompt_token(letters_tokenizer, side):
    batch = tokenize_prompts(PROMPTS, letters_tokenizer, padding_side=side)
    for i, ids in enumerate(IDS):
        q = int(batch.query_pos[i])
        assert batch.tokens[i, q] == 3  # "->"
        assert batch.tokens[i, q - len(ids) + 1 : q + 1].tolist() == ids
        assert batch.attention_mask[i].sum() == len(ids)


def test_prepend_bos_false(letters_tokenizer):
    batch = tokenize_prompts([P3], letters_tokenizer, prepend_bos=False)
    assert batch.tokens.tolist() == [[11, 3]]
    assert batch.query_pos.tolist() == [1]


@pytest.mark.parametrize("side", ["left", "right"])
def test_include_answer_puts_answer_after_query(letters_tokenizer, side):
    plain = tokenize_prompts(PROMPTS, letters_tokenizer, padding_side=side)
    batch = tokenize_prompts(PROMPTS, letters_tokenizer, padding_side=side, include_answer=True)
    assert batch.include_answer and batch.tokens.shape == (3, 14)
    for i, (ids, ans) in enumerate(zip(IDS, ANSWERS, strict=True)):
        q = int(batch.query_pos[i])
        assert batch.tokens[i, q + 1 : q + 1 + len(ans)].tolist() == list(ans)
        assert batch.tokens[i, q - len(ids) + 1 : q + 1].tolist() == ids
        assert batch.attention_mask[i].sum() == len(ids) + len(ans)
        # Same prompt tokens as without the answer.
        qp = int(plain.query_pos[i])
        assert plain.tokens[i, qp - len(ids) + 1 : qp + 1].tolist() == ids
    if side == "left":
        assert batch.tokens[0].tolist() == [0, 0, 1, 7, 3, 8, 4, 9, 3, 10, 4, 11, 3, 12]
        assert batch.query_pos.tolist() == [12, 12, 12]
    else:
        assert batch.tokens[2].tolist() == [1, 11, 3, 12] + [0] * 10
        assert batch.query_pos.tolist() == [10, 12, 2]


def test_prompt_batch_fields_are_shape_checked(letters_tokenizer):
    """With the jaxtyping hook (conftest), PromptBatch's shapes must agree with each other."""
    batch = tokenize_prompts(PROMPTS, letters_tokenizer)
    with pytest.raises(TypeCheckError, match="query_pos"):
        replace(batch, query_pos=torch.zeros(2, dtype=torch.long))  # 2 rows, not 3
    with pytest.raises(TypeCheckError, match="attention_mask"):
        replace(batch, attention_mask=batch.attention_mask[:, :-1])  # one column short


def test_select_keeps_rows(letters_tokenizer):
    batch = tokenize_prompts(PROMPTS, letters_tokenizer, padding_side="right")
    sub = batch.select([2, 0])
    assert sub.prompts == [P3, P1]
    assert sub.tokens.tolist() == [batch.tokens[2].tolist(), batch.tokens[0].tolist()]
    assert sub.query_pos.tolist() == [2, 10]
    assert sub.answer_ids == [(12,), (12,)]
    assert sub.answer_first.tolist() == [12, 12]


def test_query_logits_do_not_depend_on_padding(tiny):
    """Logits at the query position: left-padded == right-padded == each prompt unpadded."""
    model = tiny.model
    at_query = {}
    for side in ("left", "right"):
        batch = tokenize_prompts(PROMPTS, model, padding_side=side)
        with torch.no_grad():
            logits = model(batch.tokens, attention_mask=batch.attention_mask)
        at_query[side] = logits[torch.arange(3), batch.query_pos]
    singles = []
    for p in PROMPTS:
        one = tokenize_prompts([p], model)
        assert one.attention_mask.all()
        with torch.no_grad():
            singles.append(model(one.tokens)[0, -1])
    single = torch.stack(singles)
    torch.testing.assert_close(at_query["left"], at_query["right"], atol=1e-5, rtol=0)
    torch.testing.assert_close(at_query["left"], single, atol=1e-5, rtol=0)
    # Not a vacuous comparison: the three prompts give different predictions.
    assert not torch.allclose(single[0], single[1], atol=1e-3)


def test_qa_template(letters_tokenizer):
    qa = ICLPrompt("letters", P1.demonstrations, P1.query, TEMPLATES["qa"])
    assert qa.text == "Q: a\nA: b\n\nQ: c\nA: d\n\nQ: e\nA:"
    batch = tokenize_prompts([qa], letters_tokenizer, include_answer=True)
    # fmt: off
    assert batch.tokens.tolist() == [[
        1, 5, 7, 4, 6, 8, 4, 4, 5, 9, 4, 6, 10, 4, 4, 5, 11, 4, 6, 12,
    ]]
    # fmt: on
    assert batch.query_pos.tolist() == [18]  # "A:"
    assert batch.answer_ids == [(12,)]
    prompts = sample_prompts(latent_mapping_suite(1, 8)["latent_0"], 3, 2, template="qa")
    for p in prompts:
        blocks = p.text.split("\n\n")
        assert len(blocks) == 4
        for d, block in zip(p.demonstrations, blocks, strict=False):
            assert block == f"Q: {d.input}\nA: {d.output}"
        assert blocks[-1] == f"Q: {p.query.input}\nA:"


def test_segments_concatenate_to_prompt_and_answer():
    for template in TEMPLATES.values():
        p = ICLPrompt("t", P2.demonstrations, P2.query, template)
        segs = p.template.segments(p.demonstrations, p.query)
        assert "".join(s for s, _ in segs) == p.text + template.answer_prefix + p.answer
        # each answer carries the whitespace before it, which BPE tokenizers attach to it
        answers = [s for s, is_answer in segs if is_answer]
        assert answers == [template.answer_prefix + a for a in ("x", "b", "y")]


def test_sample_prompts_properties():
    task = latent_mapping_suite(1, 16, seed=0)["latent_0"]
    prompts = sample_prompts(task, k=4, n=16, seed=3)
    assert len(prompts) == 16
    # n <= len(task): every query is used exactly once.
    assert sorted(p.query.input for p in prompts) == sorted(task.inputs)
    pairs = set(task.examples)
    for p in prompts:
        assert p.k == 4 and p.task == "latent_0"
        assert p.query.input not in {d.input for d in p.demonstrations}
        assert len({d.input for d in p.demonstrations}) == 4  # no repeated demonstration
        assert set(p.demonstrations) <= pairs and p.query in pairs
    assert sample_prompts(task, 4, 16, seed=3) == prompts
    assert sample_prompts(task, 4, 16, seed=4) != prompts
    # More prompts than queries: queries repeat, still never among the demonstrations.
    many = sample_prompts(task, k=4, n=40, seed=0)
    assert len(many) == 40
    assert all(p.query.input not in {d.input for d in p.demonstrations} for p in many)


def test_sample_prompts_with_query_split():
    task = latent_mapping_suite(1, 16)["latent_0"]
    train, test = task.split((0.5, 0.5))
    prompts = sample_prompts(train, k=3, n=len(test), queries=test)
    assert sorted(p.query.input for p in prompts) == sorted(test.inputs)
    assert all(set(p.demonstrations) <= set(train.examples) for p in prompts)


def test_shuffled_label_variants():
    task = latent_mapping_suite(1, 16)["latent_0"]
    prompts = sample_prompts(task, k=5, n=30, seed=0)
    shuffled = shuffled_label_variants(prompts, seed=1)
    assert len(shuffled) == len(prompts)
    for p, s in zip(prompts, shuffled, strict=True):
        assert s.query == p.query and s.answer == p.answer
        assert [d.input for d in s.demonstrations] == [d.input for d in p.demonstrations]
        old = [d.output for d in p.demonstrations]
        new = [d.output for d in s.demonstrations]
        assert Counter(new) == Counter(old)
        assert new != old
    assert shuffled_label_variants(prompts, seed=1) == shuffled
    # Duplicate outputs: a permutation that only swaps equal labels is not accepted.
    dup = ICLPrompt("t", (E("a", "x"), E("b", "x"), E("c", "y")), E("d", "x"))
    for seed in range(20):
        (s,) = shuffled_label_variants([dup], seed=seed)
        assert [d.output for d in s.demonstrations] != ["x", "x", "y"]
        assert sorted(d.output for d in s.demonstrations) == ["x", "x", "y"]


def test_dummy_query_variants():
    task = latent_mapping_suite(1, 12)["latent_0"]
    prompts = sample_prompts(task, k=4, n=12, seed=0)
    dummies = dummy_query_variants(prompts, task, seed=0)
    assert len(dummies) == len(prompts)
    for p, d in zip(prompts, dummies, strict=True):
        assert d.demonstrations == p.demonstrations
        assert d.query in set(task.examples)
        assert d.query.input != p.query.input
        assert d.query.input not in {x.input for x in p.demonstrations}
    assert dummy_query_variants(prompts, task, seed=0) == dummies


def test_null_task_draws_random_outputs():
    task = latent_mapping_suite(1, 8)["latent_0"]
    null = null_task(task)
    assert null.random_outputs and null.family == "null"
    a = sample_prompts(null, k=4, n=30, seed=7)
    assert a == sample_prompts(null, k=4, n=30, seed=7)
    assert a != sample_prompts(null, k=4, n=30, seed=8)
    pool = set(task.outputs)
    seen: dict[str, set[str]] = {}
    for p in a:
        for ex in (*p.demonstrations, p.query):
            assert ex.output in pool
            seen.setdefault(ex.input, set()).add(ex.output)
    # No consistent mapping: inputs get different outputs across prompts.
    assert sum(len(outs) > 1 for outs in seen.values()) >= len(seen) // 2
    # And the outputs are not the null task's stored (round-robin) pairing.
    stored = dict(zip(null.inputs, null.outputs, strict=True))
    agree = [p.query.output == stored[p.query.input] for p in a]
    assert np.mean(agree) < 0.6


def test_multi_token_answers(symbol_tokenizer):
    suite = list_suite(n_symbols=8, min_len=2, max_len=3, n_examples=20)
    prompts = sample_prompts(suite["copy"], k=2, n=6, seed=0)
    batch = tokenize_prompts(prompts, symbol_tokenizer, include_answer=True)
    vocab = symbol_tokenizer.get_vocab()
    for p, ans, q, row in zip(
        prompts, batch.answer_ids, batch.query_pos, batch.tokens, strict=True
    ):
        words = p.answer.split()
        assert len(ans) == len(words) > 1
        assert list(ans) == [vocab[w] for w in words]
        assert row[int(q) + 1 : int(q) + 1 + len(ans)].tolist() == list(ans)
    assert not batch.single_token_answers
    with pytest.raises(PromptError, match="more than one token"):
        batch.require_single_token()
    single = tokenize_prompts(sample_prompts(suite["last"], 2, 6), symbol_tokenizer)
    assert single.single_token_answers
    single.require_single_token()  # does not raise


def test_unknown_template_and_padding_side(letters_tokenizer):
    with pytest.raises(PromptError, match="Unknown template 'nope'"):
        sample_prompts(latent_mapping_suite(1, 8)["latent_0"], 2, 2, template="nope")
    # Under the jaxtyping hook beartype rejects the Literal first; tvlens's own check (for
    # users without the hook) sits in the undecorated function.
    with pytest.raises(TypeCheckError, match="padding_side"):
        tokenize_prompts(PROMPTS, letters_tokenizer, padding_side="middle")
    with pytest.raises(PromptError, match="padding_side must be 'left' or 'right'"):
        inspect.unwrap(tokenize_prompts)(PROMPTS, letters_tokenizer, padding_side="middle")
