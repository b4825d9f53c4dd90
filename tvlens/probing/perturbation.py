"""The perturbation test (Han et al. 2025): write the mean last-query-token state of task B into
prompts of task A at one layer (last position), for every (A, B), and measure the change of A's
loss / accuracy. Works on any :class:`~tvlens.probing.family.TaskFamily`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import einops
import numpy as np
import pandas as pd
import torch

from tvlens.errors import EmptyTaskError, TVLensError
from tvlens.frames import tidy
from tvlens.injection.inject import inject
from tvlens.plotting import plot_perturbation
from tvlens.probing.family import TaskFamily
from tvlens.probing.measures import task_decodability
from tvlens.results import Result


@dataclass
class PerturbationResult(Result):
    """``loss[a][b]``: task ``a``'s query loss with ``b``'s mean state written at ``layer``;
    ``base_loss[a]`` unpatched; ``delta_loss = loss - base_loss`` (same for accuracy)."""

    kind: str
    tasks: list[str]
    layer: int
    mode: str
    step: int | None
    base_loss: list[float]
    loss: list[list[float]]
    base_accuracy: list[float] | None
    accuracy: list[list[float]] | None
    td_at_layer: float | None = None

    @property
    def delta_loss(self) -> np.ndarray:
        return np.array(self.loss) - np.array(self.base_loss)[:, None]

    @property
    def delta_accuracy(self) -> np.ndarray | None:
        if self.accuracy is None:
            return None
        return np.array(self.accuracy) - np.array(self.base_accuracy)[:, None]

    def summary(self) -> dict[str, float | None]:
        """Mean change on the diagonal (own task's mean) and off it (another task's)."""
        eye = np.eye(len(self.tasks), dtype=bool)
        dl = self.delta_loss
        out: dict[str, float | None] = {
            "same_task_delta_loss": float(dl[eye].mean()),
            "cross_task_delta_loss": float(dl[~eye].mean()) if len(self.tasks) > 1 else None,
        }
        da = self.delta_accuracy
        if da is not None:
            out["same_task_delta_accuracy"] = float(da[eye].mean())
            out["cross_task_delta_accuracy"] = (
                float(da[~eye].mean()) if len(self.tasks) > 1 else None
            )
        return out

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy: one row per (``task``, ``donor``): task's prompts with the donor task's mean
        state written in; ``loss``, ``base_loss``, ``delta_loss`` (and the same for accuracy),
        with ``step``, ``layer`` and ``mode``."""
        n = len(self.tasks)
        values = {
            "loss": self.loss,
            "base_loss": np.repeat(np.array(self.base_loss)[:, None], n, axis=1),
            "delta_loss": self.delta_loss,
        }
        if self.accuracy is not None:
            values["accuracy"] = self.accuracy
            values["base_accuracy"] = np.repeat(np.array(self.base_accuracy)[:, None], n, axis=1)
            values["delta_accuracy"] = self.delta_accuracy
        return tidy(
            values,
            ("task", "donor"),
            {"task": self.tasks, "donor": self.tasks},
            {"step": self.step, "layer": self.layer, "mode": self.mode},
        )

    def plot(self, **kwargs):

        return plot_perturbation(self, **kwargs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["delta_loss"] = self.delta_loss.tolist()
        d["delta_accuracy"] = None if self.accuracy is None else self.delta_accuracy.tolist()
        d["summary"] = self.summary()
        return d


def perturbation(
    model: Any,
    family: TaskFamily,
    layer: int,
    n_prompts: int = 64,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    mode: str = "replace",
) -> PerturbationResult:
    """Patch the mean last-query-token state of task B (after block ``layer``, from prompts
    seeded apart) into prompts of task A at the last position, for every (A, B).

    ``mode="replace"`` overwrites the state with B's mean (Hendel-style; it also erases
    whatever the state held about the query itself). ``mode="shift"`` adds
    ``mean_B - mean_A``: the point moves from A's cluster to B's and keeps its own offset
    (the query), so A == B is exactly no change. For the regression family the last token
    *is* the query ``x``, so ``shift`` is the meaningful test there."""
    if mode not in ("replace", "shift"):
        raise TVLensError(f"mode must be 'replace' or 'shift', got {mode!r}.")
    tv = family.tvmodel(model)
    layer = tv.check_layer(layer)
    tasks = list(tasks or family.task_names)
    if not tasks:
        raise EmptyTaskError("No tasks to perturb.")
    # Means from other prompts than the ones patched: A == B is not a self-patch.
    donors = {
        t: family.run(model, t, n_prompts, seed=seed + 50_000 + 1000 * i)
        for i, t in enumerate(tasks)
    }
    means = {t: einops.reduce(o.hidden[layer], "n d -> d", "mean") for t, o in donors.items()}
    base_l, base_a, loss, acc = [], [], [], []
    for i, a in enumerate(tasks):
        base = family.run(model, a, n_prompts, seed=seed + 1000 * i)
        base_l.append(base.loss)
        base_a.append(base.accuracy)
        row_l, row_a = [], []
        for b in tasks:
            vec, how = (means[b], "replace") if mode == "replace" else (means[b] - means[a], "add")
            with inject(tv, vec, layer=layer, mode=how, positions="last"):
                o = family.run(model, a, n_prompts, seed=seed + 1000 * i)
            row_l.append(o.loss)
            row_a.append(o.accuracy)
        loss.append(row_l)
        acc.append(row_a)
    has_acc = family.has_accuracy
    # How separated the task clusters are at this layer (TD without the Null task).
    pooled = torch.cat([o.hidden[layer] for o in donors.values()])
    td = (
        task_decodability(pooled, [t for t, o in donors.items() for _ in range(o.hidden.shape[1])])
        if len(tasks) > 1 and len(pooled) > 10
        else None
    )
    return PerturbationResult(
        kind=family.kind,
        tasks=tasks,
        layer=layer,
        mode=mode,
        step=getattr(tv.spec, "step", None),
        base_loss=base_l,
        loss=loss,
        base_accuracy=base_a if has_acc else None,
        accuracy=acc if has_acc else None,
        td_at_layer=None if td is None else td.overall,
    )
