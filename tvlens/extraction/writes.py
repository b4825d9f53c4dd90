"""What a steering method writes, where, and how, as a value: an :class:`Intervention` is a
tuple of :class:`Write` s, each naming one hook point of one layer, the positions it touches,
and the operation. The injection stage applies it
(:func:`tvlens.injection.intervention.apply_intervention`).

The value lives here, in the extraction stage, because extraction methods produce it
(:meth:`tvlens.extraction.methods.ExtractionMethod.intervention`) and the injection stage,
which comes after extraction, applies it: an extraction module imports it from here.

Why a value and not one function per method: the methods of the field write differently —
Hendel et al. 2023 replace one layer's residual at the query; Todd et al. 2024 add one vector at
one layer; ICV (Liu et al. 2024) adds a scaled, norm-preserving shift at every layer and
position; I2CL (Li et al. 2025) mixes a context vector into every layer's attention and MLP
outputs with learned coefficients; state vectors (Li et al. 2024) replace attention outputs of
the first layers. One value that says all of that lets tables, figures and the harness describe
and apply every method the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jaxtyping import Float
from torch import Tensor

from tvlens.errors import TVLensError

Point = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
Op = Literal["replace", "add", "mix", "add_keep_norm"]
OPS = ("replace", "add", "mix", "add_keep_norm")
POINTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


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
