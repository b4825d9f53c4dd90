"""What a steering method writes, where, and how: an :class:`Intervention` is a tuple of
:class:`Write` s, each naming one hook point of one layer, the positions it touches, and the
operation. The injection stage applies any intervention with :func:`apply_intervention`, one
context manager over the bridge's ``hooks`` (removed on exit and on error).

Why a value and not one function per method: the methods of the field write differently —
Hendel et al. 2023 replace one layer's residual at the query; Todd et al. 2024 add one vector at
one layer; ICV (Liu et al. 2024) adds a scaled, norm-preserving shift at every layer and
position; I2CL (Li et al. 2025) mixes a context vector into every layer's attention and MLP
outputs with learned coefficients; state vectors (Li et al. 2024) replace attention outputs of
the first layers. One value that says all of that lets tables, figures and the harness describe
and apply every method the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from tvlens.errors import TVLensError
from tvlens.models.tvmodel import TVModel

Point = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "attn_module"]
Op = Literal["replace", "add", "mix", "add_keep_norm"]
OPS = ("replace", "add", "mix", "add_keep_norm")
# attn_module: the attention module's own output, before any norm the block applies to it
# (Gemma-2, OLMo-2); the same tensor as attn_out on pre-norm blocks (TVModel.attn_module_hook).
POINTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "attn_module")


class InterventionError(TVLensError, ValueError):
    """An intervention that does not fit the model or its own rules."""


@dataclass(frozen=True)
class Write:
    """One write: at ``point`` of block ``layer``, at ``positions``.

    ``op``:
      - ``replace``: ``h ← v``;
      - ``add``: ``h ← h + scale·v``;
      - ``mix``: ``h ← keep·h + scale·v`` (I2CL's linear combination);
      - ``add_keep_norm``: ``h' = h + scale·v``, then rescaled to ``‖h‖`` (ICV: the shift
        changes the direction of the latent state, not its size).
    ``vector`` is ``[d_model]`` (every prompt) or ``[batch, d_model]`` (one per prompt).
    """

    layer: int
    vector: Float[Tensor, "*batch d_model"]
    # Checked in __post_init__ with a clear line (a Literal here would be refused by the
    # runtime type checker first, with its own long message).
    point: str = "resid_post"
    op: str = "add"
    scale: float = 1.0
    keep: float = 1.0
    positions: str = "last"

    def __post_init__(self) -> None:
        if self.point not in POINTS:
            raise InterventionError(f"point must be one of {POINTS}, got {self.point!r}.")
        if self.op not in OPS:
            raise InterventionError(f"op must be one of {OPS}, got {self.op!r}.")
        if self.positions not in ("last", "all"):
            raise InterventionError(f"positions must be 'last' or 'all', got {self.positions!r}.")
        if self.vector.ndim not in (1, 2):
            raise InterventionError(
                f"vector has shape {tuple(self.vector.shape)}: give [d_model] or [batch, d_model]."
            )


@dataclass(frozen=True)
class Intervention:
    """Every write of one method, applied together. ``describe()`` says what it does."""

    writes: tuple[Write, ...]
    method: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "writes", tuple(self.writes))
        if not self.writes:
            raise InterventionError("An intervention needs at least one write.")

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({w.layer for w in self.writes}))

    def describe(self) -> str:
        ops = sorted({f"{w.op} at {w.point} ({w.positions})" for w in self.writes})
        layers = self.layers
        where = f"layer {layers[0]}" if len(layers) == 1 else f"{len(layers)} layers"
        return f"{'; '.join(ops)}, {where}"


def hook_name(model: TVModel, point: str, layer: int) -> str:
    if point.startswith("resid_"):
        return model.resid_hook(layer, point.removeprefix("resid_"))  # type: ignore[arg-type]
    if point == "attn_out":
        return model.attn_out_hook(layer)
    if point == "mlp_out":
        return model.mlp_out_hook(layer)
    if point == "attn_module":
        return model.attn_module_hook(layer)
    raise InterventionError(
        f"point must be resid_pre/resid_mid/resid_post/attn_out/mlp_out, got {point!r}."
    )


def write_hook(write: Write) -> Any:
    """The hook function of one write."""

    def hook(act: Tensor, hook: Any = None) -> Tensor:
        v = write.vector.to(act.device, act.dtype)
        if v.ndim == 2 and v.shape[0] != act.shape[0]:
            raise InterventionError(
                f"the vector has {v.shape[0]} rows (one per prompt) but the batch has "
                f"{act.shape[0]} prompts: pass one row per prompt, or a [d_model] vector."
            )
        if write.positions == "all":
            idx: tuple = (slice(None), slice(None))
            v = v[:, None] if v.ndim == 2 else v
        else:
            idx = (slice(None), -1)
        act = act.clone()
        h = act[idx]
        if write.op == "replace":
            new = v.expand_as(h)
        elif write.op == "add":
            new = h + write.scale * v
        elif write.op == "mix":
            new = write.keep * h + write.scale * v
        else:  # add_keep_norm
            shifted = h + write.scale * v
            new = shifted * (h.norm(dim=-1, keepdim=True) / shifted.norm(dim=-1, keepdim=True))
        act[idx] = new
        return act

    return hook


def check_intervention(model: TVModel, intervention: Intervention) -> list[tuple[str, Any]]:
    """The hooks of ``intervention`` on ``model``, checked: layers in range, points the model
    has, vectors of its ``d_model``."""
    hooks = []
    for w in intervention.writes:
        if w.vector.shape[-1] != model.d_model:
            raise InterventionError(
                f"a write at layer {w.layer} has size {w.vector.shape[-1]} but {model.name} has "
                f"d_model={model.d_model}."
            )
        hooks.append((hook_name(model, w.point, w.layer), write_hook(w)))
    return hooks


@contextmanager
def apply_intervention(
    model: TVModel, intervention: Intervention | Sequence[Write]
) -> Iterator[TVModel]:
    """Apply every write of ``intervention`` while the block runs; the hooks are removed on
    exit, also when the block raises.

    Example::

        with apply_intervention(model, Intervention((Write(2, v, op="add", scale=4.0),))):
            logits = model(batch.tokens, attention_mask=batch.attention_mask)
    """
    if not isinstance(intervention, Intervention):
        intervention = Intervention(tuple(intervention))
    hooks = check_intervention(model, intervention)
    with model.bridge.hooks(fwd_hooks=hooks):
        yield model


def stack_rows(vectors: Sequence[Tensor]) -> Tensor:
    """``[n, d_model]`` from ``n`` vectors (a helper for methods that write per layer)."""
    return torch.stack([v.detach() for v in vectors])
