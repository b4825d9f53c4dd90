"""Training prompts are the prompts scoring sees: ``ICLBatcher`` gives the token ids that
``tokenize_prompts`` gives for the same prompt, and its answer flags cover exactly the answer
tokens, on a byte-level BPE tokenizer (which merges across the template's pieces) and on the
real SmolLM2 tokenizer, for every template."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tvlens.tasks import get_suite, sample_prompts, tokenize_prompts
from tvlens.training.data import ICLBatcher

TEMPLATES = ("arrow", "qa", "hendel")


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE tokenizer (GPT-2's scheme) trained here on the words suite's prompts."""
    suite = get_suite("words")
    texts = [p.text + " " + p.answer for t in suite for tmpl in TEMPLATES
             for p in sample_prompts(t, 3, 30, seed=0, template=tmpl)]  # fmt: skip
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<bos>", "<pad>"],
                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )  # fmt: skip
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>")


def check_same_as_scoring(tok, bos_id: int) -> None:
    suite = get_suite("words")
    for tmpl in TEMPLATES:
        batcher = ICLBatcher(suite, tok, 3, tmpl, bos_id=bos_id)
        for task in suite:
            for p in sample_prompts(task, 3, 10, seed=1, template=tmpl):
                ids, flags, starts, zero_shot = batcher.encode_prompt(p)
                scored = tokenize_prompts([p], tok, prepend_bos=False, include_answer=True,
                                          device="cpu")  # fmt: skip
                assert ids == [bos_id, *scored.tokens[0].tolist()], (tmpl, p.text)
                q = int(scored.query_pos[0]) + 1  # +1: the BOS in front
                assert ids[starts[-1] :] == list(scored.answer_ids[0]) and starts[-1] == q + 1
                assert len(starts) == 4 and all(flags[s] for s in starts)
                assert sum(flags) >= 4 and not any(flags[q - 1 : q + 1])
                zs = tokenize_prompts([p.zero_shot()], tok, prepend_bos=False, device="cpu")
                assert zero_shot == [bos_id, *zs.tokens[0].tolist()]


def test_training_prompts_are_the_scored_prompts_on_bpe(bpe):
    # Encoded alone, the answer "dry" is not the " dry" of the prompt: pieces must not be
    # tokenized one by one.
    assert (
        bpe("dry", add_special_tokens=False)["input_ids"]
        != bpe(" dry", add_special_tokens=False)["input_ids"][-1:]
    )
    check_same_as_scoring(bpe, bpe.bos_token_id)


@pytest.mark.smollm2
def test_training_prompts_are_the_scored_prompts_on_smollm2(smollm2):
    check_same_as_scoring(smollm2.tokenizer, smollm2.prompt_bos_id)
