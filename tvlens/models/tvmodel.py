"""A loaded model (:class:`TVModel`): the ``TransformerBridge`` plus a uniform description of
it (:class:`ModelSpec`), its hook names, per-head outputs and tokenization. Loading is in
:mod:`tvlens.models.loading`."""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

import tvlens.models.adapter as adapter
from tvlens.errors import LayerError, PromptError
from tvlens.models.bos import resolve_prompt_bos
from tvlens.models.wrap import ConfigError, bridge_from_object, resolve_device
from tvlens.runtime import configure_threads
from tvlens.tasks.registry import get_suite

ResidPoint = Literal["pre", "mid", "post"]


@dataclass(frozen=True)
class ModelSpec:
    """What was loaded and its shape."""

    name: str
    revision: str | None
    source: Literal["hub", "folder", "tvlens", "pretrained", "gguf", "memory"]
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
    # For short-name pretrained models and GGUF files: where the weights came from (hub, or a
    # dequantized GGUF and its converted folder); for a wrapped peft model, ``{"peft": {...}}``.
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
        configure_threads()  # tvlens.runtime: once per process, before the first analysis
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

    @classmethod
    def wrap(
        cls,
        model: Any,
        tokenizer: Any = None,
        *,
        name: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        prepend_bos: bool | None = None,
        bos: str | int = "auto",
    ) -> TVModel:
        """A model already in memory as a TVModel, with the checks and BOS policy of
        :func:`~tvlens.models.load_model` (which calls this when given a model object).

        Args:
            model: An HF ``PreTrainedModel`` (causal LM), a peft model around one, a
                TransformerLens ``TransformerBridge``, or a TVModel (returned as it is).
            tokenizer: The model's tokenizer (object, folder or hub name). Needed for an HF
                model built in memory; by default the one its config was loaded from. A
                bridge keeps its own.
            name: The name recorded in ``spec.name`` (default: the config's name or path,
                else the architecture).
            device / dtype: Move / cast the model first; default: leave it where it is.
            prepend_bos / bos: As for ``load_model``: the tokenizer as given decides
                whether prompts start with its BOS.

        The model is not copied: TransformerLens replaces its modules by bridge components
        that call the original ones, so the HF model still runs as before, but hooks added
        through the TVModel also fire when it is called directly. A peft LoRA model is merged
        into a copy (its adapted weights are what the bridge sees, ``spec.origin["peft"]``
        says so, and the peft model keeps its adapters); prefix / prompt tuning is refused
        (its virtual tokens are outside the layers). ``spec.source`` is ``"memory"``.
        """

        if isinstance(model, cls):
            if tokenizer is not None or name is not None:
                raise ConfigError(
                    "The model is already a TVModel: leave out tokenizer= and name= (they were "
                    "fixed when it was loaded)."
                )
            return model if device is None else model.to(resolve_device(device))
        bridge, fields, native, doc_start = bridge_from_object(
            model, tokenizer, name=name, device=device, dtype=dtype, prepend_bos=prepend_bos,
            bos=bos,
        )  # fmt: skip
        return cls(bridge, ModelSpec(**fields), prepend_bos=prepend_bos, bos=bos,
                   doc_start=doc_start, native_bos=native)  # fmt: skip

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

    def describe(self) -> str:
        """What ``tvlens info`` prints: sizes, the spec, hook names, where the weights came
        from and what prompts start with."""
        spec, bos, origin = self.spec, self.spec.prompt_bos, self.spec.origin
        lines = [repr(self), json.dumps(spec.to_dict(), indent=2),
                 f"residual hooks: {self.resid_hook(0)} .. {self.resid_hook(-1)}; "
                 f"heads: {self.z_hook(0)} [batch pos head d_head]"]  # fmt: skip
        if origin.get("cache_folder"):
            lines.append(f"weights: {origin.get('note', '')}; converted folder (tvlens cache): "
                         f"{origin['cache_folder']}")  # fmt: skip
        lines.append(f"prompts start with: {bos.get('token') or 'nothing'} "
                     f"({bos.get('reason', '')})")  # fmt: skip
        return "\n".join(lines)

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
            if isinstance(layer, bool):
                raise TypeError
            layer = operator.index(layer)  # numpy integers (e.g. from argmax) are fine
        except TypeError:
            raise LayerError(
                f"layer must be an integer, got {layer!r} ({type(layer).__name__}): pass a "
                f"layer index 0..{hi - 1} of {self.name} (or a negative one from the end)."
            ) from None
        if not -hi <= layer < hi:
            raise LayerError(
                f"Layer {layer!r} is out of range for {self.name} with {self.n_layers} layers: "
                f"use 0..{hi - 1} (or negative indices from the end)."
            )
        return layer % hi

    def check_layers(self, layers: Any, what: str = "layers") -> list[int]:
        """Valid layer indices (:meth:`check_layer` each, in the order given; None: every
        layer), or one error naming ``what``: not a list, or empty (which would measure
        nothing and return an empty result)."""
        if layers is None:
            return list(range(self.n_layers))
        if isinstance(layers, int | str | float) or not hasattr(layers, "__iter__"):
            raise ConfigError(
                f"{what} must be a list of layer indices, got {layers!r}: pass e.g. "
                f"{what}=[0, 2], or leave it out for every layer."
            )
        layers = list(layers)
        if not layers:
            raise ConfigError(
                f"{what}=[] measures nothing: pass the layers to use (e.g. [0, 2]), or leave "
                "it out for every layer."
            )
        return [self.check_layer(x) for x in layers]

    def check_head(self, head: int) -> int:
        try:
            head = None if isinstance(head, bool) else operator.index(head)
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
        return self.head_hook(layer, "z")

    def head_hook(self, layer: int, act: str = "z") -> str:
        """Per-head ``q``, ``k``, ``v`` (key/value heads under grouped-query attention) or ``z``
        of layer ``layer``, ``[batch pos head d_head]``."""
        if act not in ("q", "k", "v", "z"):
            raise ValueError(f"act must be 'q', 'k', 'v' or 'z', got {act!r}.")
        return f"blocks.{self.check_layer(layer)}.attn.hook_{act}"

    def attn_out_hook(self, layer: int) -> str:
        """What the attention adds to the residual stream (after the norm on the attention
        output where the block has one: Gemma-2, OLMo-2)."""
        return f"blocks.{self.check_layer(layer)}.hook_attn_out"

    def attn_module_hook(self, layer: int) -> str:
        """The attention module's own output (``z`` through ``W_O`` plus ``b_O``), before any
        norm the block applies to it; the same tensor as :meth:`attn_out_hook` on pre-norm
        blocks."""
        return f"blocks.{self.check_layer(layer)}.attn.hook_out"

    def mlp_out_hook(self, layer: int) -> str:
        return f"blocks.{self.check_layer(layer)}.hook_mlp_out"

    def W_O(self, layer: int) -> Float[Tensor, "n_heads d_head d_model"]:
        """Output projection of layer ``layer``, split by head."""
        layer = self.check_layer(layer)
        attn = self.bridge.blocks[layer].attn
        return adapter.reshape_o(self.bridge, attn.W_O)

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
        self.check_tokens(tokens)
        return self.bridge(tokens, attention_mask=attention_mask, **kwargs)

    __call__ = forward

    def run_with_cache(self, tokens: Any, *args: Any, **kwargs: Any) -> Any:
        """The bridge's ``run_with_cache``, after :meth:`check_tokens`."""
        if isinstance(tokens, Tensor):
            self.check_tokens(tokens)
        return self.bridge.run_with_cache(tokens, *args, **kwargs)

    def check_tokens(self, tokens: Tensor) -> None:
        """Token ids this model can run, or :class:`PromptError`: at most ``n_ctx`` positions
        (a longer prompt ends in an index error inside the position embedding, or runs past
        what the model was trained on) and ids within its vocabulary."""
        if tokens.is_floating_point():  # embeddings (start_at_layer=...): not token ids
            return
        if tokens.ndim >= 1 and tokens.shape[-1] > self.n_ctx:
            raise PromptError(
                f"The prompt is {tokens.shape[-1]} tokens long but {self.name} reads at most "
                f"n_ctx={self.n_ctx}: use fewer demonstrations (smaller k) or shorter inputs."
            )
        if tokens.numel():
            hi, vocab = int(tokens.max()), self.spec.d_vocab
            if hi >= vocab or int(tokens.min()) < 0:
                bad = hi if hi >= vocab else int(tokens.min())
                raise PromptError(
                    f"Token id {bad} is outside {self.name}'s vocabulary (0..{vocab - 1}): "
                    "make the tokens with this model's tokenizer (model.to_tokens)."
                )

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
        return get_suite(**info)


# ---------------------------------------------------------------------------- loading


# Files from which transformers builds a tokenizer (one of them is enough).
