"""Templates as the seed papers' code writes them, answers tokenized as they follow the
template, the BOS policy on real tokenizers, and the function-vector data as a suite."""

from __future__ import annotations

import pytest
import torch

from tvlens.models.bos import resolve_prompt_bos
from tvlens.tasks import (
    TEMPLATES,
    Example,
    ICLPrompt,
    dummy_query_variants,
    get_suite,
    sample_prompts,
    shuffled_label_variants,
    tokenize_prompts,
)

DEMOS = (Example("hot", "cold"), Example("up", "down"))
QUERY = Example("wet", "dry")


def _prompt(name: str) -> ICLPrompt:
    return ICLPrompt("antonyms", DEMOS, QUERY, TEMPLATES[name])


def test_hendel_template_is_their_few_shot_format():
    # roeehendel/icl_task_vectors, core/data/datasets/few_shot_format.py: FewShotFormat()
    # joins "example:{input}->{output}" with "\n", appends "\n", then "example:{input}->".
    p = _prompt("hendel")
    assert p.text == "example:hot->cold\nexample:up->down\nexample:wet->"
    assert p.text + p.template.answer_prefix + p.answer == p.text + "dry"
    assert p.zero_shot().text == "example:wet->"


@pytest.mark.parametrize("name", ["todd", "qa"])
def test_todd_template_is_their_prompt_format(name):
    # ericwtodd/function_vectors, src/utils/prompt_utils.py: word_pairs_to_prompt_data with
    # its defaults (prefixes Q:/A:, separators "\n"/"\n\n", prepend_space) and create_prompt.
    p = _prompt(name)
    assert p.text == "Q: hot\nA: cold\n\nQ: up\nA: down\n\nQ: wet\nA:"
    assert p.template.answer_prefix + p.answer == " dry"  # their query_target output
    assert p.zero_shot().text == "Q: wet\nA:"


def test_arrow_template():
    p = _prompt("arrow")
    assert p.text == "hot -> cold\nup -> down\nwet ->"
    assert p.template.answer_prefix == " "


def test_segments_concatenate_to_prompt_and_answer():
    for t in TEMPLATES.values():
        p = ICLPrompt("antonyms", DEMOS, QUERY, t)
        segs = p.template.segments(p.demonstrations, p.query)
        assert "".join(s for s, _ in segs) == p.text + t.answer_prefix + p.answer
        assert [s for s, is_ans in segs if is_ans] == [
            t.answer_prefix + a for a in ("cold", "down", "dry")
        ]


# ---------------------------------------------------------------------------- on SmolLM2


@pytest.mark.smollm2
@pytest.mark.parametrize(
    ("name", "first"), [("hendel", "cold"), ("arrow", "Ġcold"), ("qa", "Ġcold"), ("todd", "Ġcold")]
)
def test_answer_token_follows_the_template(smollm2, name, first):
    """The answer's first token is the one that follows the prompt in the template's own
    text: no leading space after Hendel's "->", "Ġ" (a space) after "A:" or " ->"."""
    p = ICLPrompt("antonyms", (Example("wet", "dry"),), Example("hot", "cold"), TEMPLATES[name])
    batch = tokenize_prompts([p], smollm2, include_answer=True)
    assert smollm2.to_str_tokens(list(batch.answer_ids[0]))[0] == first
    full = smollm2.to_tokens(p.text + p.template.answer_prefix + p.answer)[0]
    assert batch.tokens[0].tolist() == full.tolist()  # prompt + answer tokenize as one text


@pytest.mark.smollm2
@pytest.mark.parametrize("name", ["arrow", "hendel", "todd"])
def test_model_emits_the_answer_token(smollm2, name):
    """On uppercase (the model does it in context), the model's top token at the query is the
    recorded first answer token; the answer tokenized with the other spacing never is."""
    task = get_suite("words")["uppercase"]
    prompts = sample_prompts(task, k=5, n=8, seed=0, template=name)
    batch = tokenize_prompts(prompts, smollm2)
    with torch.no_grad():
        logits = smollm2(batch.tokens, attention_mask=batch.attention_mask)
    top = logits[torch.arange(len(batch)), batch.query_pos].argmax(-1).cpu()
    assert (top == batch.answer_first.cpu()).float().mean() >= 0.75
    tok = smollm2.tokenizer
    other = " " if TEMPLATES[name].answer_prefix == "" else ""
    wrong = torch.tensor([tok(other + p.answer, add_special_tokens=False)["input_ids"][0]
                          for p in prompts])  # fmt: skip
    assert (top == wrong).float().mean() == 0


@pytest.mark.smollm2
def test_smollm2_prompts_all_start_with_endoftext(smollm2):
    """ICL, zero-shot, dummy-query and shuffled-label (patching) prompts, and to_tokens, all
    start with SmolLM2's document-start token <|endoftext|> (id 0), once."""
    assert smollm2.prompt_bos == {
        "policy": "auto",
        "token": "<|endoftext|>",
        "id": 0,
        "reason": "the model's document-start token (its tokenizer adds no BOS)",
    }
    task = get_suite("words")["antonyms"]
    icl = sample_prompts(task, k=3, n=4, seed=0)
    kinds = [icl, [p.zero_shot() for p in icl], dummy_query_variants(icl, task),
             shuffled_label_variants(icl)]  # fmt: skip
    for prompts in kinds:
        for side in ("left", "right"):
            b = tokenize_prompts(prompts, smollm2, padding_side=side)
            for i in range(len(b)):
                row = b.tokens[i][b.attention_mask[i].bool()].tolist()
                assert row[0] == 0 and 0 not in row[1:]
    assert smollm2.to_tokens("wet ->")[0, 0].item() == 0
    b = tokenize_prompts(icl, smollm2, prepend_bos=False)
    assert b.tokens[0, b.attention_mask[0].bool()][0].item() != 0


@pytest.mark.smollm2
def test_bos_policy_is_configurable(smollm2):
    tok = smollm2.tokenizer
    assert resolve_prompt_bos(tok, bos="none")[0] is None
    assert resolve_prompt_bos(tok, bos="<|im_start|>")[0] == 1
    assert resolve_prompt_bos(tok, bos=0)[1]["token"] == "<|endoftext|>"
    # Without the model's document-start token: TransformerLens's default (its bos_token).
    assert resolve_prompt_bos(tok)[1]["token"] == "<|im_start|>"
    from tvlens.errors import PromptError

    with pytest.raises(PromptError, match="not in the tokenizer's vocabulary"):
        resolve_prompt_bos(tok, bos="<|no such token|>")


def test_bos_policy_unchanged_for_models_whose_tokenizer_has_a_bos(tiny):
    """Models with no document-start token on record keep TransformerLens's convention:
    the tokenizer's <bos> where the bridge prepends one (GPT-2, Llama), nothing for NeoX."""
    expected = tiny.tokenizer.bos_token_id if tiny.arch in ("gpt2", "llama") else None
    assert tiny.model.prompt_bos["id"] == expected
    assert tiny.model.spec.to_dict()["prompt_bos"]["token"] == ("<bos>" if expected else None)


# ---------------------------------------------------------------------------- real task data


def test_function_vector_folder_is_a_suite(fv_data):
    suite = get_suite(str(fv_data))
    assert len(suite) == 56
    fam = {t.family for t in suite}
    assert fam == {"abstractive", "extractive"}
    assert suite["antonym"].examples[0] == Example("flawed", "perfect")
    assert suite["choose_first_of_3"].family == "extractive"
    abstractive = get_suite(str(fv_data / "abstractive"))
    assert len(abstractive) == 29 and "country-capital" in abstractive
    # Prompts from it tokenize on a bare HF tokenizer too.
    p = sample_prompts(abstractive["country-capital"], k=2, n=3, seed=0)
    assert all(x.query.input != d.input for x in p for d in x.demonstrations)
