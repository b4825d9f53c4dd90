"""Write a vector into the residual stream: ``replace`` (Hendel) or ``add`` with a scale (FV,
ATV), at the last token, at given positions, or everywhere.

:func:`inject` is a context manager over the bridge's ``hooks``: the hook is removed when the
block exits, also when it exits with an exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvlens.errors import ConfigError
from tvlens.extraction.vectors import TaskVector, VectorMismatchError
from tvlens.models.tvmodel import ResidPoint, TVModel

Mode = Literal["replace", "add"]
Positions = Literal["last", "all"] | Int[Tensor, " batch"]


def _resolve(model: TVModel, vector: TaskVector | Tensor, layer: int | None) -> tuple[Tensor, int]:
    if isinstance(vector, TaskVector):
        vector.check_compatible(model, strict_name=False)
        if layer is None:
            if len(vector.layers) != 1:
                raise VectorMismatchError(
                    f"This vector has layers {vector.layers}: pass layer=... to choose one."
                )
            layer = vector.layers[0]
        # One vector (a function vector, or one selected layer) can go into any layer; a
        # per-layer set gives the vector read at that layer.
        vec = vector.vectors[0] if len(vector.layers) == 1 else vector.at(layer)
        return vec, model.check_layer(layer)
    if layer is None:
        raise ConfigError("Pass layer=... to inject a plain tensor (the block to write into).")
    if vector.shape[-1] != model.d_model:
        raise VectorMismatchError(
            f"Vector has size {vector.shape[-1]} but {model.name} has d_model={model.d_model}."
        )
    return vector, model.check_layer(layer)


def check_mode(mode: str) -> None:
    if mode not in ("replace", "add"):
        raise ConfigError(f"mode must be 'replace' or 'add', got {mode!r}.")


def write_vector(
    current: Float[Tensor, "*rows d_model"],
    vector: Float[Tensor, "*vrows d_model"],
    mode: Mode,
    scale: float = 1.0,
) -> Float[Tensor, "*rows d_model"]:
    """The new value of ``current``: ``vector`` (``replace``) or ``current + scale * vector``."""
    vector = vector.to(current.dtype)
    return vector.expand_as(current) if mode == "replace" else current + scale * vector


def injection_hook(
    vector: Float[Tensor, "*batch d_model"],
    mode: Mode = "replace",
    scale: float = 1.0,
    positions: Positions = "last",
):
    """The hook function: ``vector`` is ``[d_model]`` or one per row ``[batch, d_model]``."""
    check_mode(mode)
    if not (
        (isinstance(positions, str) and positions in ("last", "all"))
        or (isinstance(positions, Tensor) and positions.ndim == 1
            and not positions.dtype.is_floating_point and positions.dtype != torch.bool)
    ):  # fmt: skip
        raise ConfigError(
            f"positions must be 'last', 'all' or a tensor of one integer position per prompt "
            f"(e.g. batch.query_pos), got {positions!r}."
        )

    if vector.ndim not in (1, 2):
        raise VectorMismatchError(
            f"vector has shape {tuple(vector.shape)}: give [d_model] (the same for every "
            "prompt) or [batch, d_model] (one per prompt)."
        )

    def hook(act: Tensor, hook: Any = None) -> Tensor:
        if vector.ndim == 2 and vector.shape[0] != act.shape[0]:
            # Checked here, before the write, not left to a broadcasting error inside torch.
            raise VectorMismatchError(
                f"vector has {vector.shape[0]} rows (one per prompt) but the batch has "
                f"{act.shape[0]} prompts: pass one row per prompt, or a [d_model] vector for "
                "all of them."
            )
        v = vector.to(act.device, act.dtype)
        if isinstance(positions, str) and positions == "all":
            idx = (slice(None), slice(None))
            v = v[:, None] if v.ndim == 2 else v
        elif isinstance(positions, str) and positions == "last":
            idx = (slice(None), -1)
        else:
            pos = positions.to(act.device)
            if pos.shape[0] != act.shape[0]:
                raise VectorMismatchError(
                    f"positions has {pos.shape[0]} rows but the batch has {act.shape[0]}."
                )
            n_pos = act.shape[1]
            if pos.numel() and not (-n_pos <= int(pos.min()) and int(pos.max()) < n_pos):
                bad = int(pos.max()) if int(pos.max()) >= n_pos else int(pos.min())
                raise ConfigError(
                    f"positions holds {bad}, past the prompts ({n_pos} tokens): pass positions "
                    f"0..{n_pos - 1} (e.g. batch.query_pos of these prompts), or 'last'."
                )
            idx = (torch.arange(act.shape[0], device=act.device), pos)
        act = act.clone()
        act[idx] = write_vector(act[idx], v, mode, scale)
        return act

    return hook


@contextmanager
def inject(
    model: TVModel,
    vector: TaskVector | Float[Tensor, "*batch d_model"],
    layer: int | None = None,
    mode: Mode = "replace",
    scale: float = 1.0,
    positions: Positions = "last",
    where: ResidPoint = "post",
) -> Iterator[TVModel]:
    """Inject ``vector`` into the residual stream at ``layer`` while the block runs.

    Args:
        vector: A :class:`TaskVector` (its layer is used unless ``layer`` is given) or a
            tensor ``[d_model]`` (or ``[batch, d_model]``, one per prompt).
        layer: Block whose output (``where="post"``) or input (``"pre"``) is written.
        mode: ``"replace"`` overwrites (Hendel et al.); ``"add"`` adds ``scale * vector``.
        positions: ``"last"`` (the last column: the query under left padding), ``"all"``, or
            a position per row (e.g. ``batch.query_pos`` under right padding).

    Example::

        with inject(model, tv, layer=2):
            logits = model(batch.tokens, attention_mask=batch.attention_mask)
    """
    vec, layer = _resolve(model, vector, layer)
    name = model.resid_hook(layer, where)
    hook = injection_hook(vec, mode, scale, positions)  # checks mode and shape first
    with model.bridge.hooks(fwd_hooks=[(name, hook)]):
        yield model
