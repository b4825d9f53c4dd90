"""Task decodability at every layer of a model, from one forward pass per prompt batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tvlens.errors import ConfigError
from tvlens.extraction.residual import residual_at_query
from tvlens.frames import tidy
from tvlens.models.tvmodel import TVModel
from tvlens.plotting import plot_td_by_layer
from tvlens.probing.config import KNN_K, ProbeConfig
from tvlens.probing.measures import (
    probe_accuracy,
    project_2d,
    separability,
    task_decodability,
)
from tvlens.results import Result
from tvlens.tasks.core import TaskSuite
from tvlens.tasks.prompts import sample_prompts, tokenize_prompts
from tvlens.tasks.synthetic import null_task


@dataclass
class LayerTD(Result):
    """TD (and optional probe accuracy and separability) per layer, for one model."""

    layers: list[int]
    td: list[float]
    per_task: list[dict[str, float]]
    separability: list[float]
    probe: list[float] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    n_prompts: int = 0
    k: int = 0
    # 2-D PCA of the points at the peak layer, and their task labels (for scatter plots).
    projection: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    @property
    def peak_layer(self) -> int:
        """The task-encoding layer: where TD is highest (first among ties)."""
        return self.layers[int(np.argmax(self.td))]

    def to_dataframe(self, per_task: bool = False) -> pd.DataFrame:
        """Tidy: one row per layer (``layer``, ``td``, and ``separability`` / ``probe`` when
        measured), or with ``per_task`` one row per layer and task (``layer``, ``task``, ``td``:
        that task's TD)."""
        if per_task:
            tasks = list(self.per_task[0]) if self.per_task else []
            td = [[row[t] for t in tasks] for row in self.per_task]
            return tidy({"td": np.array(td).reshape(len(self.layers), len(tasks))},
                        ("layer", "task"), {"layer": self.layers, "task": tasks})  # fmt: skip
        values = {"td": self.td}
        for name in ("separability", "probe"):
            if len(getattr(self, name)) == len(self.layers):
                values[name] = getattr(self, name)
        return tidy(values, ("layer",), {"layer": self.layers})

    def plot(self, **kwargs):
        """TD by layer (:func:`~tvlens.plotting.plot_td_by_layer`)."""

        return plot_td_by_layer(self, **kwargs)

    def to_dict(self) -> dict:
        return {
            "layers": self.layers,
            "td": self.td,
            "per_task": self.per_task,
            "separability": self.separability,
            "probe": self.probe,
            "tasks": self.tasks,
            "n_prompts": self.n_prompts,
            "k": self.k,
            "peak_layer": self.peak_layer,
        }


def td_by_layer(
    model: TVModel,
    suite: TaskSuite,
    k: int | None = ProbeConfig.k,  # the defaults are `tvlens probe`'s (ProbeConfig), written once
    n_prompts: int = ProbeConfig.n_prompts,
    seed: int = ProbeConfig.seed,
    template: str | None = None,
    include_null: bool = True,
    knn_k: int = KNN_K,
    probe: bool = ProbeConfig.probe,
    batch_size: int = 64,
    progress: bool = True,
) -> LayerTD:
    """TD at every layer over the last-query-token states of ``n_prompts`` prompts per task,
    pooled over ``suite`` plus the Null task (Han et al. 2025). ``progress``: a bar over the
    tasks (``tqdm.auto``)."""
    from tqdm.auto import tqdm

    # At the door, as the CLI checks them (ProbeConfig): a kNN over 0 neighbours or a TD from
    # one prompt per task would be a number that means nothing.
    for name, value, low in (("knn_k", knn_k, 1), ("n_prompts", n_prompts, 2),
                             ("batch_size", batch_size, 1), ("k", k, 0)):  # fmt: skip
        if value is not None and (isinstance(value, bool) or value < low):
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
    k = k if k is not None else int(model.spec.train_info.get("k", 5))
    tmpl = model.template(template)
    tasks = list(suite) + ([null_task(suite)] if include_null else [])
    prompts, labels = [], []
    for i, task in enumerate(tqdm(tasks, desc="TD by layer", disable=not progress, leave=False)):
        ps = sample_prompts(task, k, n_prompts, seed=seed + 1000 * i, template=tmpl)
        prompts += ps
        labels += [task.name] * len(ps)
    batch = tokenize_prompts(prompts, model, padding_side="left")
    hidden = residual_at_query(model, batch, batch_size=batch_size)  # [layer, n, d]
    out = LayerTD(
        list(range(model.n_layers)),
        [],
        [],
        [],
        tasks=[t.name for t in tasks],
        n_prompts=n_prompts,
        k=k,
    )
    for layer in out.layers:
        h = hidden[layer]
        td = task_decodability(h, labels, k=knn_k)
        out.td.append(td.overall)
        out.per_task.append(td.per_task)
        out.separability.append(separability(h, labels))
        if probe:
            out.probe.append(probe_accuracy(h, labels, seed=seed))
    out.projection = project_2d(hidden[out.peak_layer]).tolist()
    out.labels = labels
    return out
