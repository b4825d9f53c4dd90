"""The seed paper's continuous task family (Han et al. 2025): a mixture of sparse linear
regressions.

Task ``t`` draws ``w = B_t z`` (``B_t``: a rank-``rank`` orthonormal basis of R^d_in,
``z ~ N(0, I_rank)``), then ``x_i ~ N(0, I)`` and ``y_i = wᵀx_i + ε``. A prompt is the sequence
``x_1, y_1, x_2, y_2, ...`` (Garg et al. 2022), ``y`` embedded as ``[y, 0, ..., 0]``; a model
predicts ``y_i`` at the ``x_i`` position (MSE). The Null task draws ``y`` independently of ``x``.
The model that reads these sequences is :mod:`tvlens.models.regression`; its training,
:mod:`tvlens.training.regression`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import einops
import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvlens.errors import EmptyTaskError, TVLensError

NULL = "null"


@dataclass(frozen=True)
class RegressionMixture:
    """``n_tasks`` rank-``rank`` bases of R^``d_in``: orthogonal to each other, or (with
    ``overlap > 0``) consecutive bases sharing ``overlap`` directions, cyclically."""

    d_in: int = 16
    n_tasks: int = 4
    rank: int = 4
    overlap: int = 0
    noise_std: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rank < 1 or self.n_tasks < 1:
            raise TVLensError("RegressionMixture needs rank >= 1 and n_tasks >= 1.")
        if not 0 <= self.overlap < self.rank:
            raise TVLensError(f"overlap must be in 0..{self.rank - 1}, got {self.overlap}.")
        need = self.n_dirs
        if need > self.d_in:
            raise TVLensError(
                f"{self.n_tasks} bases of rank {self.rank} (overlap {self.overlap}) need "
                f"{need} directions, more than d_in={self.d_in}."
            )

    @property
    def n_dirs(self) -> int:
        """Orthonormal directions used in all: bases are windows of ``rank`` of them."""
        if self.overlap == 0:
            return self.n_tasks * self.rank
        # cyclic windows advancing by rank - overlap
        return self.n_tasks * (self.rank - self.overlap)

    @property
    def names(self) -> list[str]:
        return [f"basis_{t}" for t in range(self.n_tasks)]

    def to_dict(self) -> dict:
        return asdict(self)

    def bases(self) -> Float[Tensor, "task d_in rank"]:
        """Each task's orthonormal basis: windows of the columns of a seeded random rotation."""
        g = torch.Generator().manual_seed(self.seed)
        q, _ = torch.linalg.qr(torch.randn(self.d_in, self.d_in, generator=g, dtype=torch.float64))
        step = self.rank - self.overlap
        cols = [
            [(t * step + j) % self.n_dirs for j in range(self.rank)] for t in range(self.n_tasks)
        ]
        return torch.stack([q[:, c] for c in cols]).float()

    def sample(
        self, task: int | str, n: int, n_points: int, seed: int
    ) -> tuple[Float[Tensor, "n points d_in"], Float[Tensor, "n points"], Float[Tensor, "n d_in"]]:
        """``n`` prompts of ``n_points`` pairs of task ``task`` (an index, a name, or
        ``"null"``): ``x``, ``y`` and the weight vectors ``w`` (zeros for the Null task)."""
        if n < 1 or n_points < 1:
            raise EmptyTaskError(f"Need n >= 1 prompts and n_points >= 1, got {n}, {n_points}.")
        g = torch.Generator().manual_seed(int(seed))
        x = torch.randn(n, n_points, self.d_in, generator=g)
        if task == NULL:
            # Same marginal variance as a real task (E[y^2] = rank), no dependence on x.
            w = torch.zeros(n, self.d_in)
            y = torch.randn(n, n_points, generator=g) * math.sqrt(self.rank)
            return x, y, w
        t = self.task_index(task)
        z = torch.randn(n, self.rank, generator=g)
        w = einops.einsum(self.bases()[t], z, "d r, n r -> n d")
        y = einops.einsum(x, w, "n p d, n d -> n p")
        if self.noise_std > 0:
            y = y + self.noise_std * torch.randn(n, n_points, generator=g)
        return x, y, w

    def task_index(self, task: int | str) -> int:
        if isinstance(task, str):
            if task not in self.names:
                raise EmptyTaskError(f"Unknown task {task!r}; tasks: {self.names + [NULL]}.")
            return self.names.index(task)
        if not 0 <= int(task) < self.n_tasks:
            raise EmptyTaskError(f"Task index {task} out of range 0..{self.n_tasks - 1}.")
        return int(task)


MIXTURES: dict[str, RegressionMixture] = {
    "orthogonal4": RegressionMixture(d_in=16, n_tasks=4, rank=4),
    "orthogonal6": RegressionMixture(d_in=24, n_tasks=6, rank=4),
    "overlapping8": RegressionMixture(d_in=16, n_tasks=8, rank=4, overlap=2),
    # The CPU preset's mixture: 4 orthogonal bases as above, at half the size (rank 2 in 8
    # dims). At full size a CPU-sized model stays on the predict-0 plateau for > 4700 steps.
    "orthogonal4-small": RegressionMixture(d_in=8, n_tasks=4, rank=2),
}


def interleave(
    x: Float[Tensor, "n points d_in"], y: Float[Tensor, "n points"]
) -> Float[Tensor, "n seq d_in"]:
    """The token sequence ``x_1, [y_1, 0...], x_2, ...`` (length ``2 * points``)."""
    y_tok = torch.zeros_like(x)
    y_tok[..., 0] = y
    return einops.rearrange(torch.stack([x, y_tok], dim=2), "n p two d -> n (p two) d")


def query_tokens(
    x: Float[Tensor, "n points d_in"], y: Float[Tensor, "n points"]
) -> Float[Tensor, "n seq d_in"]:
    """The prompt ending at the last query ``x_p`` (its ``y_p`` is what is predicted)."""
    return interleave(x, y)[:, :-1]


def regression_batch(
    mix: RegressionMixture, step: int, batch_size: int, n_points: int, seed: int, micro: int = 0
) -> tuple[Float[Tensor, "n seq d_in"], Float[Tensor, "n points"], Int[Tensor, " n"]]:
    """Training batch ``step`` (micro-batch ``micro`` of it, with gradient accumulation): a
    function of its arguments alone (resume is exact). Tasks are drawn uniformly per row."""
    if micro == 0:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    else:
        state = np.random.SeedSequence([seed, step, micro]).generate_state(1)[0]
        g = torch.Generator().manual_seed(int(state))
    tidx = torch.randint(mix.n_tasks, (batch_size,), generator=g)
    x = torch.randn(batch_size, n_points, mix.d_in, generator=g)
    z = torch.randn(batch_size, mix.rank, generator=g)
    w = einops.einsum(mix.bases()[tidx], z, "n d r, n r -> n d")
    y = einops.einsum(x, w, "n p d, n d -> n p")
    if mix.noise_std > 0:
        y = y + mix.noise_std * torch.randn(batch_size, n_points, generator=g)
    return interleave(x, y), y, tidx


def predictions_at_x(pred: Float[Tensor, "n seq"]) -> Float[Tensor, "n points"]:
    """The predictions made at the x positions (even indices)."""
    return pred[:, 0::2]
