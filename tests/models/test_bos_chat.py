"""A tokenizer whose own BOS is a chat-template token (``<|im_start|>``: what TransformerLens's
reload of SmolLM2's tokenizer prepends) is flagged once, with the fix."""

from __future__ import annotations

import warnings

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from tvlens.models import TVModel, build_hf_model
from tvlens.models import bos as bos_module
from tvlens.models.bos import ChatBosWarning, is_chat_token, resolve_prompt_bos, tokenizer_adds_bos

CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>{% endfor %}"
)


def _tokenizer(bos: str, chat_template: str | None = CHAT) -> PreTrainedTokenizerFast:
    """A word tokenizer that prepends ``bos`` to every text, as SmolLM2's does once
    TransformerLens reloads it with ``add_bos_token=True``."""
    words = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "->", "\n"]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token="<|im_end|>", unk_token="<unk>",
        pad_token="<|endoftext|>", chat_template=chat_template,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(bos_module, "_WARNED", set())


def test_a_chat_token_bos_is_flagged_once_with_the_fix():
    tok = _tokenizer("<|im_start|>")
    native = tokenizer_adds_bos(tok)
    assert native == 2
    with pytest.warns(ChatBosWarning, match=r"'<\|im_start\|>', a chat-template token.*"
                      r"pass bos='<\|endoftext\|>'"):  # fmt: skip
        bos_id, record = resolve_prompt_bos(tok, native_bos=native)
    assert bos_id == 2 and record["reason"] == "the tokenizer's own BOS (a chat-template token)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_prompt_bos(tok, native_bos=native)  # once
        assert resolve_prompt_bos(tok, bos="<|endoftext|>", native_bos=native)[0] == 1


def test_a_chosen_chat_token_or_a_document_token_is_not_flagged():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok = _tokenizer("<|im_start|>")
        assert resolve_prompt_bos(tok, bos="<|im_start|>", native_bos=2)[0] == 2
        doc = _tokenizer("<|endoftext|>")
        assert resolve_prompt_bos(doc, native_bos=tokenizer_adds_bos(doc))[0] == 1


def test_what_counts_as_a_chat_token():
    tok = _tokenizer("<|im_start|>")
    assert is_chat_token(tok, "<|im_start|>") and is_chat_token(tok, "<|im_end|>")
    assert not is_chat_token(tok, "<|endoftext|>")  # not in the template
    assert not is_chat_token(tok, "<s>") and not is_chat_token(tok, None)
    bare = _tokenizer("<|im_start|>", chat_template=None)
    assert is_chat_token(bare, "<|im_start|>")  # a well-known chat marker
    assert not is_chat_token(bare, "<|endoftext|>")


def test_wrapping_a_model_with_a_chat_bos_tokenizer_warns():
    tok = _tokenizer("<|im_start|>")

    def hf():
        return build_hf_model("gpt2", len(tok), seed=0, n_layers=1, d_model=32, n_heads=2)

    with pytest.warns(ChatBosWarning):
        model = TVModel.wrap(hf(), tok, device="cpu")
    assert model.spec.prompt_bos["token"] == "<|im_start|>"
    fixed = TVModel.wrap(hf(), tok, device="cpu", bos="<|endoftext|>")
    assert fixed.spec.prompt_bos["token"] == "<|endoftext|>"
