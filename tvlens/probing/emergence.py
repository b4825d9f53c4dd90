"""Emergence (Han et al. 2025): per-task loss / accuracy and task decodability (per task, at
every layer, Null task included) over the checkpoints of a training run, for any
:class:`~tvlens.probing.family.TaskFamily`: do encoding (TD) and decoding (loss) rise together?
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from tvlens.errors import TVLensError
from tvlens.frames import tidy
from tvlens.plotting import plot_emergence
from tvlens.probing.config import KNN_K, EmergenceConfig
from tvlens.probing.family import NULL, RunOutput, TaskFamily, family_for_run
from tvlens.probing.layers import LayerTD
from tvlens.probing.measures import project_2d, task_decodability
from tvlens.probing.series import TDSeries, correlation
from tvlens.results import Result
from tvlens.runs.checkpoints import list_checkpoints


def layer_td(outs: dict[str, RunOutput], knn_k: int) -> tuple[list[float], list[dict]]:
    """TD overall and per task at every layer, pooled over the tasks and the Null task."""
    labels = [t for t, o in outs.items() for _ in range(o.hidden.shape[1])]
    hidden = torch.cat([o.hidden for o in outs.values()], dim=1)
    td, per = [], []
    for h in hidden:
        r = task_decodability(h, labels, k=knn_k)
        td.append(r.overall)
        per.append(r.per_task)
    return td, per


@dataclass
class EmergenceResult(Result):
    """TD and loss/accuracy per task over checkpoints. ``td[c][l]`` overall TD at checkpoint
    ``c``, layer ``l``; ``td_per_task[c][l][task]``; ``loss[c][task]``."""

    kind: str
    tasks: list[str]
    steps: list[int]
    layers: list[int]
    td: list[list[float]]
    td_per_task: list[list[dict[str, float]]]
    loss: list[dict[str, float]]
    accuracy: list[dict[str, float]] | None
    config: dict = field(default_factory=dict)
    # 2-D PCA of the last checkpoint's points at its peak layer, and their labels.
    projection: list[list[float]] = field(default_factory=list)
    projection_labels: list[str] = field(default_factory=list)

    @property
    def peak_layer(self) -> int:
        """The layer with the highest TD at the last checkpoint."""
        return self.layers[int(np.argmax(self.td[-1]))]

    def task_td(self, layer: int | None = None) -> dict[str, list[float]]:
        """Per-task TD over checkpoints at ``layer`` (default: the peak layer)."""
        li = self.layers.index(self.peak_layer if layer is None else layer)
        return {t: [c[li][t] for c in self.td_per_task] for t in self.tasks}

    def onsets(
        self,
        td_threshold: float = 0.5,
        loss_fraction: float = 0.5,
        accuracy_threshold: float = 0.5,
        layer: int | None = None,
    ) -> dict[str, dict[str, int | None]]:
        """For each task, the first step where its TD (at ``layer``) reaches ``td_threshold``,
        where its loss falls below ``loss_fraction`` of its first-checkpoint loss, and (token
        suites) where its accuracy reaches ``accuracy_threshold``."""
        tds = self.task_td(layer)
        out = {}
        for t in self.tasks:
            l0 = self.loss[0][t]
            if self.accuracy is not None:
                out.setdefault(t, {})["accuracy_step"] = next(
                    (
                        s
                        for s, c in zip(self.steps, self.accuracy, strict=True)
                        if c[t] >= accuracy_threshold
                    ),
                    None,
                )
            out[t] = {
                **out.get(t, {}),
                "td_step": next(
                    (s for s, v in zip(self.steps, tds[t], strict=True) if v >= td_threshold), None
                ),
                "loss_step": next(
                    (
                        s
                        for s, c in zip(self.steps, self.loss, strict=True)
                        if c[t] <= loss_fraction * l0
                    ),
                    None,
                ),
            }
        return out

    def correlation(self, layer: int | None = None) -> dict[str, Any]:
        """TD (at ``layer``) against -loss over (task, checkpoint) pairs."""
        tds = self.task_td(layer)
        xs = [v for t in self.tasks for v in tds[t]]
        ys = [-c[t] for t in self.tasks for c in self.loss]
        return correlation(xs, ys)

    def to_dataframe(self, per_task: bool = False) -> pd.DataFrame:
        """Tidy: one row per checkpoint and layer (``step``, ``layer``, ``td``), or with
        ``per_task`` one row per checkpoint, layer and task (Null task included): that task's
        ``td``, and its ``loss`` (and ``accuracy``) at the checkpoint (NaN for Null)."""
        coords = {"step": self.steps, "layer": self.layers}
        if not per_task:
            return tidy({"td": self.td}, ("step", "layer"), coords)
        tasks = self.tasks + [NULL]
        td = [[[c[t] for t in tasks] for c in ckpt] for ckpt in self.td_per_task]
        values = {"td": td}
        for name in ("loss", "accuracy"):
            per_ckpt = getattr(self, name)
            if per_ckpt is not None:  # per checkpoint and task, the same at every layer
                values[name] = [
                    [[c.get(t, float("nan")) for t in tasks] for _ in self.layers] for c in per_ckpt
                ]
        return tidy(values, ("step", "layer", "task"), {**coords, "task": tasks})

    def plot(self, **kwargs):

        return plot_emergence(self, **kwargs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["peak_layer"] = self.peak_layer
        d["onsets"] = self.onsets()
        d["td_vs_neg_loss"] = self.correlation()
        if self.accuracy is not None:
            tds = self.task_td()
            d["td_vs_accuracy"] = correlation(
                [v for t in self.tasks for v in tds[t]],
                [c[t] for t in self.tasks for c in self.accuracy],
            )
        return d


def emergence(
    run: str | Path,
    family: TaskFamily | None = None,
    revisions: Sequence[str | int] | None = EmergenceConfig.revisions,  # `tvlens emergence`'s
    n_prompts: int = EmergenceConfig.n_prompts,
    seed: int = EmergenceConfig.seed,
    knn_k: int = KNN_K,
    device: str | None = None,
    progress: bool = True,
) -> EmergenceResult:
    """TD at every layer (per task and overall, Null task included) and loss / accuracy per
    task, at every checkpoint of a tvlens run (or the ``revisions`` given)."""
    family = family or family_for_run(run)
    ckpts = list_checkpoints(run)
    if revisions is not None:
        wanted = {str(r).removeprefix("step") for r in revisions}
        ckpts = [c for c in ckpts if str(c.step) in wanted]
    if not ckpts:
        raise TVLensError(f"No checkpoints to analyse in {str(run)!r}.")
    names = family.task_names + [NULL]
    res = EmergenceResult(
        family.kind, family.task_names, [], [], [], [], [], [] if family.has_accuracy else None
    )
    for c in tqdm(ckpts, desc="emergence", disable=not progress):
        model = family.load(run, revision=c.step, device=device)
        outs = {
            t: family.run(model, t, n_prompts, seed=seed + 1000 * i) for i, t in enumerate(names)
        }
        td, per = layer_td(outs, knn_k)
        if c is ckpts[-1]:
            peak = int(np.argmax(td))
            res.projection = project_2d(torch.cat([o.hidden[peak] for o in outs.values()])).tolist()
            res.projection_labels = [t for t, o in outs.items() for _ in range(o.hidden.shape[1])]
        res.steps.append(c.step)
        res.td.append(td)
        res.td_per_task.append(per)
        res.loss.append({t: outs[t].loss for t in family.task_names})
        if res.accuracy is not None:
            res.accuracy.append({t: outs[t].accuracy for t in family.task_names})
    res.layers = list(range(len(res.td[0])))
    res.config = {
        "run": str(run),
        "family": family.describe(),
        "n_prompts": n_prompts,
        "seed": seed,
        "knn_k": knn_k,
    }
    return res


def series_from_emergence(em: EmergenceResult, model: str = "") -> TDSeries:
    """A :class:`~tvlens.probing.series.TDSeries` view of an emergence result, so that
    ``td.json`` and the ``tvlens probe`` figures look the same for every family. For the
    regression family "accuracy" is the explained variance ``1 - normalised MSE`` of the query
    prediction (1: perfect, 0: no better than predicting 0)."""
    fam = em.config.get("family", {})
    by_ckpt = []
    for i in range(len(em.steps)):
        r = LayerTD(
            list(em.layers),
            list(em.td[i]),
            list(em.td_per_task[i]),
            [],
            tasks=em.tasks + [NULL],
            n_prompts=em.config.get("n_prompts", 0),
            k=fam.get("k", fam.get("n_points", 0)),
        )
        if i == len(em.steps) - 1:
            r.projection, r.labels = em.projection, em.projection_labels
        by_ckpt.append(r)
    if em.accuracy is not None:
        acc = em.accuracy
    else:
        acc = [{t: max(0.0, 1.0 - c[t]) for t in em.tasks} for c in em.loss]
    return TDSeries(
        model or em.config.get("run", ""),
        [f"step{s}" for s in em.steps],
        list(em.steps),
        by_ckpt,
        acc,
        {
            **em.config,
            "accuracy": "first token" if em.accuracy else "explained variance 1 - MSE/E[y^2]",
        },
    )
