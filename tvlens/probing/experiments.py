"""The seed paper's experiments (Han et al. 2025) as reusable functions, for both task
families: token suites (latent mappings...) and the sparse-linear-regression mixture.

* :func:`emergence`: per-task loss / accuracy and TD (per task, every layer) over the
  checkpoints of a training run: do encoding (TD) and decoding (loss) rise together?
* :func:`perturbation`: write the mean last-query-token state of task B into prompts of task A
  at one layer (replace, last position): the change of A's loss / accuracy for every (A, B).

Fine-tuning only the first / last k blocks (the paper's Table 1) is a training run:
:func:`tvlens.training.finetune.finetune_layers`.

A *family* (:class:`TokenFamily`, :class:`RegressionFamily`) knows how to load a checkpoint,
sample prompts of a task (or of the Null task) and run them once, returning the residual after
every block at the last query token and the loss (and accuracy) on the query's answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import einops
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tvlens.errors import EmptyTaskError, TVLensError
from tvlens.extraction.residual import activations_at_positions
from tvlens.injection.inject import inject
from tvlens.models.checkpoints import list_checkpoints, write_json_atomically
from tvlens.models.loading import TVModel, load_model
from tvlens.probing.measures import project_2d, task_decodability
from tvlens.tasks.core import TaskSuite
from tvlens.tasks.prompts import sample_prompts, tokenize_prompts
from tvlens.tasks.synthetic import null_task

NULL = "null"


@dataclass
class RunOutput:
    """One task's prompts run once: residual after every block at the last query token, the
    mean loss on the query's answer, and accuracy (None for regression)."""

    hidden: Float[Tensor, "layer n d_model"]
    loss: float
    accuracy: float | None


# (layer, vector [d_model], "replace" | "add") written at the last position
Patch = tuple[int, Tensor, str] | None


# ---------------------------------------------------------------------------- families


class TokenFamily:
    """A token task suite (``latent``, ``bitwise``...), ``k`` demonstrations per prompt."""

    kind = "tokens"

    def __init__(self, suite: TaskSuite, k: int = 5, template: str = "arrow", batch_size: int = 64):
        if len(list(suite)) == 0:
            raise EmptyTaskError("The suite has no tasks.")
        self.suite, self.k, self.template, self.batch_size = suite, k, template, batch_size
        self._tasks = {t.name: t for t in suite}
        self._tasks[NULL] = null_task(suite)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.suite]

    def describe(self) -> dict:
        return {"kind": self.kind, "suite": self.suite.spec, "k": self.k, "template": self.template}

    def load(self, run: str | Path, revision: str | int | None = None, device: str | None = None):
        return load_model(run, revision=revision, device=device or "cpu")

    @torch.no_grad()
    def run(self, model: TVModel, task: str, n: int, seed: int, patch: Patch = None) -> RunOutput:
        if task not in self._tasks:
            raise EmptyTaskError(f"Unknown task {task!r}; tasks: {list(self._tasks)}.")
        prompts = sample_prompts(self._tasks[task], self.k, n, seed=seed, template=self.template)
        names = model.resid_hooks("post")
        hidden, losses, correct = [], [], []
        for start in range(0, n, self.batch_size):
            batch = tokenize_prompts(
                prompts[start : start + self.batch_size], model, padding_side="left"
            )
            logits: dict[str, Tensor] = {}

            def keep_logits(act: Tensor, hook: Any, logits=logits) -> None:
                logits["q"] = act[:, -1].detach()  # the query's next-token logits

            hooks = [("unembed.hook_out", keep_logits)]
            with model.hooks(fwd_hooks=hooks), _maybe_inject(model, patch):
                acts = activations_at_positions(model, batch, names)
            hidden.append(torch.stack([acts[nm] for nm in names]))
            q = logits["q"].float()
            ans = batch.answer_first.to(q.device)
            losses.append(F.cross_entropy(q, ans, reduction="none").cpu())
            correct.append((q.argmax(-1) == ans).float().cpu())
        return RunOutput(
            torch.cat(hidden, dim=1).cpu(),
            float(torch.cat(losses).mean()),
            float(torch.cat(correct).mean()),
        )

    def tvmodel(self, model: TVModel) -> TVModel:
        return model


class RegressionFamily:
    """The sparse-linear-regression mixture; a prompt has ``n_points`` pairs, the last ``y``
    is the query's answer (MSE; no accuracy)."""

    kind = "regression"

    def __init__(self, mixture, n_points: int = 20, batch_size: int = 256):
        self.mixture, self.n_points, self.batch_size = mixture, n_points, batch_size

    @property
    def task_names(self) -> list[str]:
        return self.mixture.names

    def describe(self) -> dict:
        return {"kind": self.kind, "mixture": self.mixture.to_dict(), "n_points": self.n_points}

    def load(self, run: str | Path, revision: str | int | None = None, device: str | None = None):
        from tvlens.models.regression import load_regression_model

        return load_regression_model(run, revision=revision, device=device)

    @torch.no_grad()
    def run(self, model, task: str, n: int, seed: int, patch: Patch = None) -> RunOutput:
        from tvlens.tasks.regression import query_tokens

        x, y, w = self.mixture.sample(task, n, self.n_points, seed=seed)
        tokens = query_tokens(x, y)  # ends at the last query x_p
        tv = model.tvmodel
        names = tv.resid_hooks("post")
        store: dict[str, Tensor] = {}

        def keeper(name: str):
            def keep(act: Tensor, hook: Any) -> None:
                store[name] = act[:, -1].detach()

            return keep

        with tv.hooks(fwd_hooks=[(nm, keeper(nm)) for nm in names]), _maybe_inject(tv, patch):
            pred = model.predict(tokens)[:, -1].cpu()
        hidden = torch.stack([store[nm] for nm in names]).cpu()
        # Normalised MSE: squared error over E[y_q^2 | w] = |w|^2 + noise^2 (rank for the Null
        # task), summed over prompts. 1 = predicting 0; removes most of the sampling noise of
        # |w|^2, so tasks and checkpoints compare.
        m = self.mixture
        expected = (w**2).sum(-1) + m.noise_std**2 if task != NULL else torch.full((n,), m.rank)
        return RunOutput(hidden, float(((pred - y[:, -1]) ** 2).sum() / expected.sum()), None)

    def tvmodel(self, model) -> TVModel:
        return model.tvmodel


def _maybe_inject(model: TVModel, patch: Patch):
    from contextlib import nullcontext

    if patch is None:
        return nullcontext()
    layer, vec, mode = patch
    return inject(model, vec, layer=layer, mode=mode, positions="last")


def family_for_run(run: str | Path, **kwargs: Any) -> TokenFamily | RegressionFamily:
    """The family a tvlens run was trained on (from its ``config.json``)."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise TVLensError(f"{str(run)!r} is not a tvlens training run (no config.json).")
    cfg = json.loads(path.read_text())
    if cfg.get("family") == "regression":
        from tvlens.tasks.regression import RegressionMixture

        return RegressionFamily(
            RegressionMixture(**cfg["mixture"]), n_points=cfg["config"]["n_points"], **kwargs
        )
    from tvlens.tasks.registry import get_suite

    c = cfg["config"]
    return TokenFamily(get_suite(**c["suite"]), k=c["k"], template=c["template"], **kwargs)


def _layer_td(outs: dict[str, RunOutput], knn_k: int) -> tuple[list[float], list[dict]]:
    """TD overall and per task at every layer, pooled over the tasks and the Null task."""
    labels = [t for t, o in outs.items() for _ in range(o.hidden.shape[1])]
    hidden = torch.cat([o.hidden for o in outs.values()], dim=1)
    td, per = [], []
    for h in hidden:
        r = task_decodability(h, labels, k=knn_k)
        td.append(r.overall)
        per.append(r.per_task)
    return td, per


# ---------------------------------------------------------------------------- emergence


@dataclass
class EmergenceResult:
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
        from tvlens.probing.series import correlation

        tds = self.task_td(layer)
        xs = [v for t in self.tasks for v in tds[t]]
        ys = [-c[t] for t in self.tasks for c in self.loss]
        return correlation(xs, ys)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["peak_layer"] = self.peak_layer
        d["onsets"] = self.onsets()
        d["td_vs_neg_loss"] = self.correlation()
        if self.accuracy is not None:
            from tvlens.probing.series import correlation

            tds = self.task_td()
            d["td_vs_accuracy"] = correlation(
                [v for t in self.tasks for v in tds[t]],
                [c[t] for t in self.tasks for c in self.accuracy],
            )
        return d


def emergence(
    run: str | Path,
    family: TokenFamily | RegressionFamily | None = None,
    revisions: Sequence[str | int] | None = None,
    n_prompts: int = 100,
    seed: int = 0,
    knn_k: int = 10,
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
        family.kind, family.task_names, [], [], [], [], [], [] if family.kind == "tokens" else None
    )
    for c in tqdm(ckpts, desc="emergence", disable=not progress):
        model = family.load(run, revision=c.step, device=device)
        outs = {
            t: family.run(model, t, n_prompts, seed=seed + 1000 * i) for i, t in enumerate(names)
        }
        td, per = _layer_td(outs, knn_k)
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


# ---------------------------------------------------------------------------- perturbation


@dataclass
class PerturbationResult:
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["delta_loss"] = self.delta_loss.tolist()
        d["delta_accuracy"] = None if self.accuracy is None else self.delta_accuracy.tolist()
        d["summary"] = self.summary()
        return d


def perturbation(
    model: Any,
    family: TokenFamily | RegressionFamily,
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
            patch = (
                (layer, means[b], "replace")
                if mode == "replace"
                else (layer, means[b] - means[a], "add")
            )
            o = family.run(model, a, n_prompts, seed=seed + 1000 * i, patch=patch)
            row_l.append(o.loss)
            row_a.append(o.accuracy)
        loss.append(row_l)
        acc.append(row_a)
    has_acc = family.kind == "tokens"
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


# ---------------------------------------------------------------------------- runners


def series_from_emergence(em: EmergenceResult, model: str = ""):
    """A :class:`~tvlens.probing.series.TDSeries` view of an emergence result, so that
    ``td.json`` and the ``tvlens probe`` figures look the same for every family. For the
    regression family "accuracy" is the explained variance ``1 - normalised MSE`` of the query
    prediction (1: perfect, 0: no better than predicting 0)."""
    from tvlens.probing.layers import LayerTD
    from tvlens.probing.series import TDSeries

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


def run_emergence(
    run: str | Path,
    out: str | Path,
    revisions: Sequence[str | int] | None = None,
    n_prompts: int = 100,
    seed: int = 0,
    perturb_layer: int | None = None,
    perturb_mode: str = "shift",
    perturb_prompts: int = 64,
    perturb_steps: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """What ``tvlens emergence`` runs: :func:`emergence` on a run, then (unless
    ``perturb_layer`` is negative) the perturbation test at an early and the last checkpoint
    (default layer: the middle one; ``perturb_steps`` to choose the checkpoints).
    Writes ``out/emergence.json``, ``out/perturbation.json``,
    ``out/config.json`` and the figures ``emergence`` and ``perturbation`` (HTML + PNG)."""
    from tvlens.plotting import plot_emergence, plot_perturbation, save_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    family = family_for_run(run)
    em = emergence(
        run, family, revisions=revisions, n_prompts=n_prompts, seed=seed, progress=progress
    )
    em_d = em.to_dict()
    write_json_atomically(out / "emergence.json", em_d)
    figs = {"emergence": save_figure(plot_emergence(em_d), out / "emergence")}
    result: dict[str, Any] = {"emergence": em, "figures": figs}
    if perturb_layer is None or perturb_layer >= 0:
        n_layers = len(em.layers)
        layer = n_layers // 2 if perturb_layer is None else perturb_layer
        # "early": the first checkpoint whose overall TD at that layer is halfway to its final
        # value (clusters partly formed); "late": the last checkpoint.
        tds = [row[layer] for row in em.td]
        half = tds[0] + 0.5 * (tds[-1] - tds[0])
        early = next(s for s, v in zip(em.steps, tds, strict=True) if v >= half)
        perts = []
        for step in perturb_steps or dict.fromkeys([early, em.steps[-1]]):
            model = family.load(run, revision=step)
            perts.append(
                perturbation(
                    model, family, layer, n_prompts=perturb_prompts, seed=seed, mode=perturb_mode
                )
            )
        pd = [p.to_dict() for p in perts]
        write_json_atomically(out / "perturbation.json", pd)
        figs["perturbation"] = save_figure(plot_perturbation(pd), out / "perturbation")
        result["perturbation"] = perts
    write_json_atomically(
        out / "config.json",
        {
            "run": str(run),
            "revisions": revisions,
            "n_prompts": n_prompts,
            "seed": seed,
            "perturb_layer": perturb_layer,
            "perturb_mode": perturb_mode,
            "perturb_prompts": perturb_prompts,
            "perturb_steps": perturb_steps,
            "family": family.describe(),
            "seconds": round(time.time() - t0, 1),
        },
    )
    return result
