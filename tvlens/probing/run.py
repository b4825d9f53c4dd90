"""What ``tvlens probe`` and ``tvlens emergence`` run: an analysis, then its JSON and figures in
an output folder."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tvlens.injection.perturbation import perturbation
from tvlens.models.checkpoints import write_json_atomically
from tvlens.plotting import (
    plot_emergence,
    plot_perturbation,
    plot_projection,
    plot_td_by_layer,
    plot_td_heatmap,
    plot_td_vs_accuracy,
    save_figure,
)
from tvlens.probing.emergence import emergence, series_from_emergence
from tvlens.probing.family import family_for_run, is_regression_run
from tvlens.probing.series import TDSeries, save_series, td_over_checkpoints
from tvlens.tasks.core import TaskSuite


def run_probe(
    model: str | Path,
    out: str | Path,
    revisions: Sequence[str | int] | None = None,
    suite: TaskSuite | str | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> TDSeries:
    """What ``tvlens probe`` runs: :func:`td_over_checkpoints`, then ``out/td.json`` and the
    figures ``td_by_layer``, ``td_heatmap``, ``td_vs_accuracy`` and ``projection`` (the last
    checkpoint's peak layer), as HTML and PNG."""
    from tvlens.tasks.registry import get_suite

    if isinstance(suite, str):
        suite = get_suite(suite)
    if is_regression_run(model):
        # The regression family has no tokens: same TD (Null task included) from the
        # emergence module, explained variance in place of accuracy.
        em = emergence(
            model,
            revisions=revisions,
            n_prompts=kwargs.get("n_prompts", 100),
            seed=kwargs.get("seed", 0),
            device=kwargs.get("device"),
            progress=progress,
        )
        series = series_from_emergence(em, str(model))
    else:
        series = td_over_checkpoints(model, revisions, suite=suite, progress=progress, **kwargs)
    out = Path(out)
    save_series(series, out)
    data = series.to_dict()
    save_figure(plot_td_by_layer(data), out / "td_by_layer")
    save_figure(plot_td_heatmap(data), out / "td_heatmap")
    save_figure(plot_td_vs_accuracy(data), out / "td_vs_accuracy")
    last = series.by_checkpoint[-1]
    save_figure(
        plot_projection(
            last.projection, last.labels, f"Layer {last.peak_layer} at {series.revisions[-1]} (PCA)"
        ),
        out / "projection",
    )
    return series


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
