"""Turning what the user holds into a bridge: devices and dtypes, the tokenizer as the bridge
keeps it, the BOS the model's own tokenizer prepends, and models already in memory (HF, peft,
``TransformerBridge``). Kept apart from :mod:`tvlens.models.tvmodel` and
:mod:`tvlens.models.loading`, which both build on it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from tvlens.errors import ConfigError, ModelLoadError
from tvlens.models.bos import tokenizer_adds_bos
from tvlens.models.hf import quiet_transformers
from tvlens.models.pretrained import MANIFEST, get_pretrained

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(device: str | torch.device | None) -> str | torch.device:
    """``device``, checked to exist on this machine (default: the best available), or
    :class:`ConfigError` naming the devices there are."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"Unknown device {device!r}: use cpu, cuda, cuda:N or mps (or leave it out)."
        ) from None
    mps = getattr(torch.backends, "mps", None)
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": mps is not None and mps.is_available(),
    }.get(dev.type, True)
    if not available:
        raise ConfigError(
            f"Device {device!r} is not available on this machine: use --device cpu "
            f"(or leave it out for {default_device()!r})."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"Device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
            "CUDA device(s)."
        )
    return device


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"Unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}.")
    return _DTYPES[dtype]


def _user_tokenizer(tokenizer: Any) -> Any:
    """The ``tokenizer=`` of :func:`load_model` as an object the bridge keeps: a path or hub
    name is loaded; an object is copied and marked so that TransformerLens uses it as it is
    (it otherwise reloads the tokenizer from ``init_kwargs["name_or_path"]``, dropping the
    object; a tokenizer built in memory, e.g. ``PreTrainedTokenizerFast(tokenizer_object=...)``,
    has no such entry, and TransformerLens's ``get_tokenizer_with_bos`` stops with
    ``KeyError: 'name_or_path'`` — what made ``boot_transformers(hf_model=...)`` fail)."""

    from transformers import AutoTokenizer

    if isinstance(tokenizer, str | Path):
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(str(Path(tokenizer).expanduser()))
        except (OSError, ValueError) as e:
            raise ModelLoadError(
                f"Could not load the tokenizer {str(tokenizer)!r}: {str(e).splitlines()[0][:200]}"
                ". Give a folder with tokenizer files, a hub name, or a tokenizer object."
            ) from None
    if not callable(getattr(tokenizer, "convert_ids_to_tokens", None)):
        raise ConfigError(
            f"tokenizer= must be an HF tokenizer, a folder or a hub name, got "
            f"{type(tokenizer).__name__}."
        )
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.init_kwargs.setdefault("name_or_path", getattr(tokenizer, "name_or_path", ""))
    tokenizer.init_kwargs["add_bos_token"] = True
    return tokenizer


def spec_fields(bridge: Any, name: str, revision, source, path, extra: dict) -> dict[str, Any]:
    """The :class:`~tvlens.models.tvmodel.ModelSpec` fields of a bridge."""
    cfg = bridge.cfg
    n_heads = int(cfg.n_heads)
    n_kv = getattr(cfg, "n_key_value_heads", None) or n_heads
    hf_cfg = getattr(bridge.original_model, "config", None)
    arch = getattr(cfg, "architecture", None) or (
        (hf_cfg.architectures or ["?"])[0] if hf_cfg is not None else "?"
    )
    return dict(
        name=name,
        revision=revision,
        source=source,
        architecture=str(arch),
        n_layers=int(cfg.n_layers),
        n_heads=n_heads,
        n_kv_heads=int(n_kv),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        d_vocab=int(cfg.d_vocab),
        n_ctx=int(cfg.n_ctx),
        path=path,
        step=extra.get("step"),
        train_info=extra.get("train_info", {}),
    )


def _is_bridge(obj: Any) -> bool:
    from transformer_lens.model_bridge import TransformerBridge

    return isinstance(obj, TransformerBridge)


def _is_peft(obj: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft not installed: nothing can be a peft model
        return False
    return isinstance(obj, PeftModel)


def _unwrap_peft(model: Any) -> tuple[Any, dict]:
    """A plain HF model computing what the peft model computes, and its record.

    Adapters that change weights (LoRA and its kin) are merged into a copy: the bridge then
    hooks ordinary linear layers whose weights are the adapted ones, so ``W_O``, head outputs
    and logits are those of the adapted model, and the user's peft model keeps its adapters.
    Prompt-learning adapters (prefix / prompt tuning) add virtual tokens that no hook of the
    bridge sees: they are refused rather than silently dropped."""

    cfg = model.peft_config.get(model.active_adapter)
    kind = str(getattr(getattr(cfg, "peft_type", None), "value", cfg.__class__.__name__))
    if getattr(cfg, "is_prompt_learning", False) or not hasattr(model, "merge_and_unload"):
        raise ConfigError(
            f"A {kind} peft model cannot be wrapped: its virtual tokens live outside the "
            "transformer's layers, so hooks would not see them. Pass model.get_base_model() "
            "to analyse the base model, or use a weight adapter (LoRA) that can be merged."
        )
    merged = copy.deepcopy(model).merge_and_unload()
    return merged, {"type": kind, "adapter": str(model.active_adapter), "merged": True}


def check_wrappable(model: Any, tok: Any) -> None:
    """What the bridge and every measure need of an HF model, checked before wrapping it: an
    LM head (next-token logits), real weights (not on the ``meta`` device), and an
    embedding row for every token id its tokenizer can produce."""
    kind = type(model).__name__
    if model.get_output_embeddings() is None:
        raise ConfigError(
            f"The {kind} has no language-model head (a base model, e.g. from AutoModel): "
            "load it with AutoModelForCausalLM, or give its name or folder to load_model."
        )
    if any(p.is_meta for p in model.parameters()):
        raise ConfigError(
            f"The {kind}'s weights are on the 'meta' device (not loaded, e.g. built under "
            "init_empty_weights or with device_map='meta'): load its weights first, or give "
            "its name or folder to load_model."
        )
    emb = model.get_input_embeddings()
    rows = getattr(emb, "num_embeddings", None)
    n_tok = len(tok) if tok is not None else None
    if rows is not None and n_tok is not None and n_tok > rows:
        raise ConfigError(
            f"The tokenizer has {n_tok} tokens but the {kind}'s embedding has {rows} rows: "
            f"ids {rows}..{n_tok - 1} would index past it. Pass the tokenizer the model was "
            "trained with (or resize its embeddings: model.resize_token_embeddings(len(tok)))."
        )


def _already_bridged(hf_model: Any) -> bool:
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    return any(isinstance(m, GeneralizedComponent) for m in hf_model.modules())


def bridge_from_object(
    model: Any,
    tokenizer: Any = None,
    *,
    name: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    prepend_bos: bool | None = None,
    bos: str | int = "auto",
) -> tuple[Any, dict[str, Any], int | None, str | None]:
    """What :meth:`TVModel.wrap` builds a TVModel from: the bridge around a model already in
    memory (a ``TransformerBridge``, an HF ``PreTrainedModel`` or a peft model around one),
    its spec fields, the BOS its own tokenizer prepends, and its document-start token."""
    if isinstance(model, str | Path):
        raise ConfigError(
            f"{str(model)!r} is a name or a folder, not a model object: use "
            f"load_model({str(model)!r})."
        )
    peft_info: dict = {}
    if _is_peft(model):
        model, peft_info = _unwrap_peft(model)
    if _is_bridge(model):
        bridge = model
        if tokenizer is not None:
            raise ConfigError(
                "A TransformerBridge carries its own tokenizer: leave out tokenizer= (or set "
                "bridge.tokenizer before wrapping)."
            )
        if device is not None:
            bridge.to(resolve_device(device))
        if dtype is not None:
            bridge.to(resolve_dtype(dtype))
        # The bridge's tokenizer was reloaded to add a BOS: ask the one saved with the model.
        user_tok = str(getattr(bridge.tokenizer, "name_or_path", "") or "") or None
        source_name = name or str(getattr(bridge.cfg, "model_name", None) or "bridge")
    else:
        from transformers import PreTrainedModel

        if not isinstance(model, PreTrainedModel):
            raise ConfigError(
                f"Cannot wrap a {type(model).__name__}: give an HF PreTrainedModel (a causal "
                "LM, peft-wrapped or not), a TransformerBridge, a TVModel, or a name or folder "
                "for load_model."
            )
        if _already_bridged(model):
            raise ConfigError(
                f"This {type(model).__name__} is already wrapped by a TransformerBridge (the "
                "bridge replaces its modules in place): reuse the TVModel you got, or wrap a "
                "fresh copy of the model."
            )
        cfg_name = str(getattr(model.config, "_name_or_path", "") or "")
        if tokenizer is None:
            if not cfg_name:
                raise ConfigError(
                    f"The {type(model).__name__} was not loaded from a folder or the hub, so "
                    "it has no tokenizer on record: pass tokenizer=."
                )
            tokenizer = cfg_name
        user_tok = tokenizer
        tok = _user_tokenizer(tokenizer)
        check_wrappable(model, tok)
        if device is not None:
            model.to(resolve_device(device))
        if dtype is not None:
            model.to(resolve_dtype(dtype))
        source_name = name or cfg_name or str((model.config.architectures or ["model"])[0])
        from transformer_lens.model_bridge import TransformerBridge

        try:
            with quiet_transformers():
                bridge = TransformerBridge.boot_transformers(
                    source_name,
                    hf_model=model,
                    tokenizer=tok,
                    device=str(next(model.parameters()).device),
                    dtype=next(model.parameters()).dtype,
                )
        except (ValueError, KeyError, NotImplementedError) as e:
            raise ModelLoadError(
                f"TransformerLens cannot wrap this {type(model).__name__} "
                f"({type(e).__name__}: {str(e)[:300]})."
            ) from e
    bridge.eval()
    if bridge.tokenizer is None or len(bridge.tokenizer) <= 2:
        raise ModelLoadError(
            f"Model {source_name!r} has no usable tokenizer: pass tokenizer= (the HF "
            "tokenizer the model was trained with)."
        )
    fields = spec_fields(bridge, source_name, None, "memory", None, {})
    if peft_info:
        fields["origin"] = {"peft": peft_info}
    native = None
    if bos == "auto" and prepend_bos is not False:
        if user_tok is None:
            native = None
        elif isinstance(user_tok, str | Path):
            native = _native_bos(str(Path(user_tok).expanduser()), None, False)
        else:  # the tokenizer as the user holds it, before TransformerLens adds a BOS
            native = tokenizer_adds_bos(user_tok)
    return bridge, fields, native, doc_start_token(source_name)


def _native_bos(source: str, revision: str | None, trust_remote_code: bool) -> int | None:
    """What the model's own tokenizer prepends when encoding (None: nothing, or unknown)."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(
                source, revision=revision, trust_remote_code=trust_remote_code
            )
    except Exception:  # no loadable tokenizer beside the model: fall back to the other rules
        return None
    return tokenizer_adds_bos(tok)


def doc_start_token(name: str) -> str | None:
    """The document-start token of a known pretrained model: by hub name, from the manifest
    of a folder tvlens converted, or from the ``tvlens.json`` of a folder tvlens fine-tuned
    from one."""
    entry = get_pretrained(name)
    if entry is not None:
        return entry.doc_start
    for file in (MANIFEST, "tvlens.json"):
        path = Path(name).expanduser() / file
        if path.is_file():
            try:
                return json.loads(path.read_text()).get("doc_start")
            except (OSError, ValueError, AttributeError):
                return None
    return None
