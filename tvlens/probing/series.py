"""Task decodability over a checkpoint series (layers × checkpoints), against ICL accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from tvlens import plotting
from tvlens.errors import TVLensError
from tvlens.evaluation.icl import evaluate_icl
from tvlens.models.loading import load_model
from tvlens.models.tvmodel import TVModel
from tvlens.probing.config import ProbeConfig
from tvlens.probing.layers import LayerTD, td_by_layer
from tvlens.results import Result
from tvlens.runs import TD_FILE
from tvlens.runs.checkpoints import is_run_dir, list_checkpoints
from tvlens.tasks.core import TaskSuite


def correlation(x: Sequence[float | int], y: Sequence[float | int]) -> dict[str, Any]:
    """Pearson r and R² of a least-squares line (None when undefined: fewer than 3 points or
    a constant side, e.g. every task at accuracy 1.0)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"pearson_r": None, "r2": None, "n": len(x)}
    r = float(stats.pearsonr(x, y)[0])
    return {"pearson_r": r, "r2": r * r, "n": len(x)}


@dataclass
class TDSeries(Result):
    """TD per layer and checkpoint, and ICL accuracy per task and checkpoint."""

    model: str
    revisions: list[str]
    steps: list[int | None]
    by_checkpoint: list[LayerTD]
    accuracy: list[dict[str, float]]  # per checkpoint: task -> ICL accuracy
    config: dict = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{rev:>12s}  TD by layer " + " ".join(f"{x:.2f}" for x in r.td)
                 + f"  (peak layer {r.peak_layer})"
                 for rev, r in zip(self.revisions, self.by_checkpoint, strict=True)]  # fmt: skip
        pooled = self.correlations()["pooled"]
        if pooled["pearson_r"] is not None:
            lines.append(f"TD vs accuracy: r = {pooled['pearson_r']:.2f}, R2 = {pooled['r2']:.2f}")
        return "\n".join(lines)

    @property
    def table(self) -> np.ndarray:
        """``[layer, checkpoint]`` TD."""
        return np.array([r.td for r in self.by_checkpoint]).T

    def per_task_at_peak(self, i: int) -> dict[str, float]:
        r = self.by_checkpoint[i]
        return r.per_task[r.layers.index(r.peak_layer)]

    def correlations(self) -> dict[str, Any]:
        """TD (per task, at each checkpoint's peak layer) against ICL accuracy: across tasks at
        each checkpoint, across checkpoints for each task, and pooled."""
        tasks = list(self.accuracy[0])
        out: dict[str, Any] = {"per_checkpoint": [], "per_task": {}}
        xs, ys = [], []
        for i, acc in enumerate(self.accuracy):
            td = self.per_task_at_peak(i)
            x = [td[t] for t in tasks]
            y = [acc[t] for t in tasks]
            xs += x
            ys += y
            out["per_checkpoint"].append({"revision": self.revisions[i], **correlation(x, y)})
        for t in tasks:
            x = [self.per_task_at_peak(i)[t] for i in range(len(self.accuracy))]
            y = [acc[t] for acc in self.accuracy]
            out["per_task"][t] = correlation(x, y)
        out["pooled"] = correlation(xs, ys)
        return out

    def to_dataframe(self, per_task: bool = False) -> pd.DataFrame:
        """Tidy: one row per checkpoint and layer (``revision``, ``step``, ``layer``, ``td``),
        or with ``per_task`` one row per checkpoint, layer and task, with that task's TD and its
        ICL ``accuracy`` at the checkpoint (NaN for the Null task)."""
        frames = []
        for rev, step, r, acc in zip(
            self.revisions, self.steps, self.by_checkpoint, self.accuracy, strict=True
        ):
            cols = ["layer", "task", "td"] if per_task else ["layer", "td"]
            f = r.to_dataframe(per_task=per_task)[cols]
            if per_task:
                f["accuracy"] = [acc.get(t, float("nan")) for t in f["task"]]
            f.insert(0, "step", step)
            f.insert(0, "revision", rev)
            frames.append(f)
        return pd.concat(frames, ignore_index=True)

    def plot(self, kind: str = "by_layer", **kwargs):
        """``"by_layer"`` (one line per checkpoint), ``"heatmap"`` or ``"accuracy"`` (TD
        against ICL accuracy)."""

        plots = {"by_layer": plotting.plot_td_by_layer, "heatmap": plotting.plot_td_heatmap,
                 "accuracy": plotting.plot_td_vs_accuracy}  # fmt: skip
        if kind not in plots:
            raise TVLensError(f"kind must be one of {', '.join(plots)}, got {kind!r}.")
        return plots[kind](self, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "config": self.config,
            "revisions": self.revisions,
            "steps": self.steps,
            "layers": self.by_checkpoint[0].layers,
            "td": self.table.tolist(),
            "checkpoints": [
                {"revision": rev, "step": st, **r.to_dict(), "accuracy": acc}
                for rev, st, r, acc in zip(
                    self.revisions, self.steps, self.by_checkpoint, self.accuracy, strict=True
                )
            ],
            "correlations": self.correlations(),
        }


def td_over_checkpoints(
    model: str | Path | Any,
    revisions: Sequence[str | int] | None = None,
    suite: TaskSuite | None = None,
    k: int | None = ProbeConfig.k,  # the defaults are `tvlens probe`'s (ProbeConfig), written once
    n_prompts: int = ProbeConfig.n_prompts,
    seed: int = ProbeConfig.seed,
    probe: bool = ProbeConfig.probe,
    device: str | None = None,
    progress: bool = True,
    **load_kwargs: Any,
) -> TDSeries:
    """TD at every layer of every checkpoint, with ICL accuracy on the same tasks.

    ``model`` is a tvlens run (all its checkpoints by default), or an HF name / folder: the
    model as it is by default, or its ``revisions`` (e.g. Pythia's ``["step1000",
    "step143000"]``). The suite defaults to the one a tvlens model was trained on.
    A model object (a :class:`TVModel`, an HF model with ``tokenizer=``, a bridge: see
    :meth:`TVModel.wrap`) is probed as it is: one "checkpoint", no ``revisions``.
    """
    if not isinstance(model, str | Path):
        if revisions is not None:
            raise TVLensError(
                "revisions= needs a model name, folder or run to load them from, not a model "
                "object: leave it out, or pass the run folder."
            )
        model = load_model(model, device=device, **load_kwargs)
        load_kwargs, revisions = {}, [None]
    name = model.name if isinstance(model, TVModel) else str(model)
    if revisions is None:
        run = is_run_dir(name)
        revisions = [c.revision for c in list_checkpoints(name)] if run else [None]
    revisions = list(revisions)
    if not revisions:
        raise TVLensError("No revisions to probe.")
    results, accs, steps = [], [], []
    cfg: dict[str, Any] = {}
    for rev in tqdm(revisions, desc="checkpoints", disable=not progress):
        m: TVModel = (
            model
            if isinstance(model, TVModel)
            else load_model(name, revision=rev, device=device, **load_kwargs)
        )
        s = suite or m.training_suite()
        if s is None:
            raise TVLensError(f"{name!r} has no training suite on record: pass suite=.")
        kk = k if k is not None else int(m.spec.train_info.get("k", 5))
        r = td_by_layer(m, s, k=kk, n_prompts=n_prompts, seed=seed, probe=probe, progress=progress)
        ev = evaluate_icl(m, s, k=kk, n_prompts=n_prompts, seed=seed + 1, progress=progress)
        results.append(r)
        accs.append(ev.first_token())
        steps.append(m.spec.step)
        cfg = {"k": kk, "n_prompts": n_prompts, "seed": seed, "suite": s.spec, "probe": probe,
               "prompt_bos": m.prompt_bos}  # fmt: skip
    labels = ["main" if r is None else str(r) for r in revisions]
    return TDSeries(name, labels, steps, results, accs, cfg)


def save_series(series: TDSeries, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Through the result's save(): TDSeries.load(out / "td.json") gives the series back.
    return series.save(out / TD_FILE)
