"""What a prompt starts with: the BOS policy of a model.

A short prompt with nothing before its first word gives a pretrained model no attention sink
(the first position, which heads attend to when they have nothing to do, Xiao et al. 2023,
"Efficient Streaming Language Models with Attention Sinks"): it then reads a zero-shot prompt
like ``wet ->`` in a state it never saw in training, and a task vector patched into it is
read badly. Models whose tokenizer prepends a BOS never meet this; for the others the
token that starts a document in their training data plays that role (SmolLM2:
``<|endoftext|>``; Todd et al. 2023 prepend the same token for GPT-style models).

Policy ``"auto"``, in order:
  1. the model's own tokenizer (as saved, before TransformerLens makes it add a BOS) adds a
     BOS when encoding: that token (what the model trained on);
  2. the model has a known document-start token (``doc_start``): that token;
  3. TransformerLens's default (``default_prepend_bos`` and a ``bos_token``): the BOS token;
  4. nothing.
``"none"`` prepends nothing; any other string is a token to prepend; an int is a token id.

A tokenizer whose own BOS is a chat-template token (``<|im_start|>``: a chat turn, not a
document, starts with it) is flagged once with :class:`ChatBosWarning`: TransformerLens
reloads SmolLM2's tokenizer so that it prepends ``<|im_start|>``, and a model wrapped with that
tokenizer object would otherwise start every prompt with it (the pretrained results page
traces a task-vector collapse to this token).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from tvlens.errors import PromptError


def tokenizer_adds_bos(tok: Any) -> int | None:
    """The id the tokenizer puts in front of every text by itself, or None.

    Ask the tokenizer as saved with the model: the bridge's tokenizer is reloaded by
    TransformerLens with ``add_bos_token=True`` and always answers yes."""
    try:
        plain = list(tok("a", add_special_tokens=False)["input_ids"])
        special = list(tok("a")["input_ids"])
    except Exception:  # a tokenizer that cannot encode "a" has no policy to infer
        return None
    if len(special) > len(plain) and special[-len(plain) :] == plain:
        first = special[0]
        if first in set(getattr(tok, "all_special_ids", []) or []):
            return int(first)
    return None


class ChatBosWarning(UserWarning):
    """The BOS picked by ``bos="auto"`` is a chat-template token."""


_CHAT_MARK = re.compile(r"^<\|[^|<>\s]+\|>$")
# Chat markers of common templates, for a tokenizer saved without its chat template.
_KNOWN_CHAT = {"<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|user|>", "<|system|>"}
_WARNED: set[str] = set()


def is_chat_token(tok: Any, token: str | None) -> bool:
    """Whether ``token`` is a chat-template marker: written ``<|...|>`` and used by the
    tokenizer's chat template (or a well-known chat marker when it has no template)."""
    if not token or not _CHAT_MARK.match(token):
        return False
    template = getattr(tok, "chat_template", None)
    if isinstance(template, dict):  # named templates
        template = " ".join(str(t) for t in template.values())
    if isinstance(template, str) and template:
        return token in template
    return token in _KNOWN_CHAT


def _warn_chat_bos(tok: Any, token: str, doc_start: str | None) -> None:
    key = f"{getattr(tok, 'name_or_path', '')}:{token}"
    if key in _WARNED:
        return
    _WARNED.add(key)
    vocab = tok.get_vocab() if callable(getattr(tok, "get_vocab", None)) else {}
    other = next((t for t in (doc_start, "<|endoftext|>") if t and t in vocab), None)
    fix = f"pass bos={other!r} (a document-start token) or bos='none'" if other else (
        "pass bos='none' or the token that starts a document in the model's training data"
    )  # fmt: skip
    warnings.warn(
        f"The tokenizer's own BOS is {token!r}, a chat-template token (a chat turn starts "
        f"with it, not a document), so every prompt would start with it: {fix}, or "
        f"bos={token!r} to keep it (see the models guide, 'What a prompt starts with').",
        ChatBosWarning,
        stacklevel=4,
    )


def _token_id(tok: Any, token: str) -> int:
    ids = tok.convert_tokens_to_ids([token])
    unk = getattr(tok, "unk_token_id", None)
    if not ids or ids[0] is None or (ids[0] == unk and token != getattr(tok, "unk_token", None)):
        raise PromptError(
            f"BOS token {token!r} is not in the tokenizer's vocabulary: pass bos='auto', "
            "'none' or an existing token."
        )
    return int(ids[0])


def resolve_prompt_bos(
    tok: Any,
    default_prepend_bos: bool = True,
    bos: str | int = "auto",
    prepend_bos: bool | None = None,
    doc_start: str | None = None,
    native_bos: int | None = None,
) -> tuple[int | None, dict]:
    """The token id prompts start with (None: nothing) and the record kept in results.

    ``prepend_bos`` (False / True) is the older switch: False means ``bos="none"``, True the
    policy's token or else the tokenizer's ``bos_token``. ``native_bos``: what the model's
    own tokenizer prepends (:func:`tokenizer_adds_bos` on it), None if nothing or unknown.
    """
    if prepend_bos is False:
        bos = "none"
    if isinstance(bos, bool) or not isinstance(bos, str | int):
        raise PromptError(f"bos must be 'auto', 'none', a token or a token id, got {bos!r}.")
    policy = str(bos)
    bos_id: int | None
    if isinstance(bos, int):
        if not 0 <= bos < len(tok):
            raise PromptError(f"BOS id {bos} is outside the vocabulary (size {len(tok)}).")
        bos_id, reason = bos, "given by id"
    elif bos == "none":
        bos_id, reason = None, "nothing prepended (bos='none')"
    elif bos != "auto":
        bos_id, reason = _token_id(tok, bos), "given"
    else:
        if native_bos is not None:
            bos_id, reason = int(native_bos), "the tokenizer's own BOS"
            token = tok.convert_ids_to_tokens([bos_id])[0]
            if is_chat_token(tok, token):
                _warn_chat_bos(tok, token, doc_start)
                reason += " (a chat-template token)"
        elif doc_start is not None:
            bos_id = _token_id(tok, doc_start)
            reason = "the model's document-start token (its tokenizer adds no BOS)"
        elif default_prepend_bos and tok.bos_token_id is not None:
            bos_id, reason = int(tok.bos_token_id), "the tokenizer's bos_token"
        else:
            bos_id, reason = None, "the tokenizer has no BOS token"
    if prepend_bos is True and bos_id is None:
        if tok.bos_token_id is None:
            raise PromptError(
                "prepend_bos=True but the tokenizer has no BOS token: pass bos='<token>'."
            )
        bos_id, reason = int(tok.bos_token_id), "the tokenizer's bos_token (prepend_bos=True)"
    token = None if bos_id is None else tok.convert_ids_to_tokens([bos_id])[0]
    return bos_id, {"policy": policy, "token": token, "id": bos_id, "reason": reason}
