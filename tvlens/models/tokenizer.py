"""Word-level tokenizers for tvlens's own models: one token per whitespace-separated word.

Built on HF ``tokenizers`` and wrapped in ``PreTrainedTokenizerFast`` so that a model folder
saved with it loads through ``TransformerBridge.boot_transformers`` like any HF model.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, BOS, UNK = "<pad>", "<bos>", "<unk>"
# Tokens of the prompt templates (``x -> y`` lines and ``Q:/A:``).
TEMPLATE_TOKENS = ("->", "\n", "Q:", "A:")


def build_word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` plus specials and template tokens.

    Text is split on spaces (dropped) and newlines (kept as their own token), so
    ``"s1 -> s2\\ns3 ->"`` is ``[s1, ->, s2, \\n, s3, ->]``. Unknown words map to ``<unk>``.
    """
    vocab: dict[str, int] = {}
    for w in (PAD, BOS, UNK, *TEMPLATE_TOKENS, *words):
        if w and w not in vocab:
            vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", "removed"), pre_tokenizers.Split("\n", "isolated")]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=BOS,
        unk_token=UNK,
        padding_side="left",
    )
