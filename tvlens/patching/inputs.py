"""The checked inputs of a patching call (exact or attribution): prompts as token ids on the
model's device, the layers and hooks patched, the source activations written there, and the
metric's value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvlens.errors import ConfigError, LayerError, PromptError
from tvlens.models.resume import corrupted_run
from tvlens.models.tvmodel import TVModel
from tvlens.patching.metrics import Metric
from tvlens.tasks.prompts import PromptBatch

Component = Literal["resid", "attn", "mlp", "heads"]
Positions = Literal["all", "each", "last"]
HeadAct = Literal["z", "q", "k", "v"]
COMPONENTS: tuple[str, ...] = ("resid", "attn", "mlp", "heads")
POSITIONS: tuple[str, ...] = ("all", "each", "last")
HEAD_ACTS: tuple[str, ...] = ("z", "q", "k", "v")


@dataclass
class Tokens:
    """Token ids and attention mask of one side of a patching experiment."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]

    @classmethod
    def of(cls, x: PromptBatch | Tensor, device: torch.device) -> Tokens:
        if isinstance(x, PromptBatch):
            if x.include_answer:
                raise PromptError(
                    "Patch prompts without their answers (tokenize with include_answer=False): "
                    "the metric reads the prediction at the query."
                )
            return cls(x.tokens.to(device), x.attention_mask.to(device))
        if not isinstance(x, Tensor) or x.ndim != 2 or x.is_floating_point():
            raise PromptError(
                "Give prompts as a PromptBatch (tvlens.tasks.tokenize_prompts) or token ids "
                f"[batch, pos]; got {type(x).__name__} {getattr(x, 'shape', '')}."
            )
        return cls(x.to(device), torch.ones_like(x, device=device))


def component_hook(model: TVModel, component: str, layer: int, head_act: str = "z") -> str:
    """The hook a component is patched at."""
    if component == "resid":
        return model.resid_hook(layer, "pre")
    if component == "attn":
        return model.attn_out_hook(layer)
    if component == "mlp":
        return model.mlp_out_hook(layer)
    if component == "heads":
        return model.head_hook(layer, head_act)
    raise ConfigError(f"component must be one of {COMPONENTS}, got {component!r}.")


# ---------------------------------------------------------------------------- checks
def _check_layers(model: TVModel, layers: list[int] | None) -> list[int]:
    return sorted(set(model.check_layers(layers)))


def _check_pair(clean: Tokens | None, corrupted: Tokens, positions: str) -> None:
    if clean is None:
        return
    if clean.tokens.shape != corrupted.tokens.shape:
        raise PromptError(
            f"Clean prompts {tuple(clean.tokens.shape)} and corrupted prompts "
            f"{tuple(corrupted.tokens.shape)} differ in shape: patching needs the same number "
            "of prompts and tokens (build the corrupted prompts from the clean ones, e.g. "
            "tvlens.tasks.shuffled_label_variants, with answers of one token)."
        )
    if positions != "last" and not torch.equal(clean.attention_mask, corrupted.attention_mask):
        raise PromptError(
            "Clean and corrupted prompts are padded differently, so position p is a different "
            "token in each: give prompts of equal token lengths row by row, or patch "
            "positions='last' with left padding."
        )


def _check_last(t: Tokens) -> None:
    if t.tokens.shape[1] < 2:
        raise PromptError("positions='last' needs prompts of at least two tokens.")
    if not bool(t.attention_mask[:, -1].all()):
        raise PromptError(
            "positions='last' patches the last column, which is padding in some rows: "
            "tokenize with padding_side='left'."
        )


def prepare(
    model: TVModel,
    clean: PromptBatch | Tensor | None,
    corrupted: PromptBatch | Tensor,
    component: str,
    positions: str,
    head_act: str,
    layers: list[int] | None,
) -> tuple[Tokens, Tokens | None, list[int], list[str]]:
    """Checked inputs of a patching call (exact or attribution): corrupted and clean tokens on
    the model's device, the layers, and the hook patched at each layer."""
    if component not in COMPONENTS:
        raise ConfigError(f"component must be one of {COMPONENTS}, got {component!r}.")
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}.")
    if head_act not in HEAD_ACTS:
        raise ValueError(f"head_act must be one of {HEAD_ACTS}, got {head_act!r}.")
    bridge = model.bridge
    device = model.device
    corr = Tokens.of(corrupted, device)
    cln = None if clean is None else Tokens.of(clean, device)
    _check_pair(cln, corr, positions)
    if positions == "last":
        _check_last(corr)
    layers = _check_layers(model, layers)
    hooks = [component_hook(model, component, layer, head_act) for layer in layers]
    for h in hooks:
        if h not in bridge.hook_dict:
            raise LayerError(f"This model has no hook {h!r} (component={component!r}).")
    return corr, cln, layers, hooks


# ---------------------------------------------------------------------------- sources
def source_acts(
    model: TVModel,
    source: str | Mapping[str, Tensor],
    clean: Tokens | None,
    corrupted_acts: dict[str, Tensor],
    hooks: list[str],
    positions: str,
    last_only: bool = False,
) -> tuple[dict[str, Tensor], Float[Tensor, "batch _ d_vocab"] | None]:
    """Activations to write at each hook, broadcastable to the corrupted ones, and the clean
    logits when there is a clean run (one pass, also keeping the source activations when the
    source is the clean run or its mean)."""
    from_clean = isinstance(source, str) and source in ("clean", "mean")
    if isinstance(source, str) and source not in ("clean", "mean", "zero"):
        raise ValueError(f"source must be 'clean', 'mean', 'zero' or a mapping, got {source!r}.")
    if from_clean and clean is None:
        raise PromptError(f"source={source!r} needs clean prompts.")
    logits, acts = None, {}
    if clean is not None:
        logits, acts, _ = corrupted_run(
            model, clean.tokens, clean.attention_mask, hooks if from_clean else [],
            keep_cache=False, last_only=last_only,
        )  # fmt: skip
    if source == "mean":
        last = slice(-1, None) if positions == "last" else slice(None)
        acts = {h: a[:, last].mean(0, keepdim=True) for h, a in acts.items()}
    elif source == "zero":
        acts = {h: torch.zeros_like(corrupted_acts[h][:1, :1]) for h in hooks}
    elif isinstance(source, Mapping):
        acts = {h: _given_source(source, h, corrupted_acts[h]) for h in hooks}
    return acts, logits


def _given_source(source: Mapping[str, Tensor], hook: str, target: Tensor) -> Tensor:
    """``source[hook]`` with leading axes added until it broadcasts to ``target``."""
    if hook not in source:
        raise ValueError(f"source has no activation for hook {hook!r}.")
    s = torch.as_tensor(source[hook]).to(target.device, target.dtype)
    while s.ndim < target.ndim:
        s = s[None]
    try:
        torch.broadcast_shapes(s.shape, target.shape)
    except RuntimeError:
        raise ValueError(
            f"source[{hook!r}] has shape {tuple(source[hook].shape)}, which does not "
            f"broadcast to the activation {tuple(target.shape)}."
        ) from None
    return s


def metric_value(metric: Metric, logits: Tensor) -> float:
    value = metric(logits)
    if not isinstance(value, Tensor) or value.numel() != 1:
        raise ValueError(
            f"The metric must return a scalar tensor, got {type(value).__name__} "
            f"{tuple(getattr(value, 'shape', ()))}: average over prompts inside the metric."
        )
    return float(value)
