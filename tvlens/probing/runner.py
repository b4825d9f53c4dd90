"""What ``tvlens probe`` runs: :func:`run_probe`, importable without torch. It refuses a bad
model, suite or output folder at once (:func:`~tvlens.models.doors.check_run_inputs`, issue
29), then imports the probing stage, which does the work. Its signature, defaults and
docstring are written here only (issue 30). (``tvlens emergence`` runs
:func:`tvlens.probing.run.run_emergence`.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvlens.errors import ConfigError
from tvlens.models.doors import check_run_inputs
from tvlens.probing.config import ProbeConfig
from tvlens.runs import CONFIG_FILE, PROBE, prepare_out_dir, tidy_on_error
from tvlens.runs.portable import portable
from tvlens.tasks.registry import get_suite

if TYPE_CHECKING:
    from tvlens.probing.series import TDSeries
    from tvlens.tasks.core import TaskSuite


@tidy_on_error
def run_probe(
    model: str | Path | Any,
    out: str | Path,
    suite: TaskSuite | str | None = None,
    config: ProbeConfig | None = None,
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> TDSeries:
    """What ``tvlens probe`` runs: :func:`~tvlens.probing.series.td_over_checkpoints` as
    ``config`` says (a :class:`~tvlens.probing.config.ProbeConfig`, or its fields as keyword
    ``options``), then ``out/td.json``, ``out/config.json`` and the figures ``td_by_layer``,
    ``td_heatmap``, ``td_vs_accuracy`` and ``projection`` (the last checkpoint's peak layer),
    as HTML and PNG. ``model`` may be a model object (see
    :func:`~tvlens.probing.series.td_over_checkpoints`). A model or suite that cannot load, or
    an ``out`` holding files tvlens did not write, is refused before torch is imported."""
    check_run_inputs(PROBE, model=model, suite=suite, out=out)
    # start-up time: torch and the stage are imported only after the cheap checks
    from tvlens.plotting import (  # after the checks
        plot_projection,
        plot_td_by_layer,
        plot_td_heatmap,
        plot_td_vs_accuracy,
        save_figure,
    )
    from tvlens.probing.emergence import emergence, series_from_emergence  # torch: after them
    from tvlens.probing.family import is_regression_run  # torch too
    from tvlens.probing.series import save_series, td_over_checkpoints  # torch too

    if config is not None and options:
        raise ConfigError(f"Pass config= or its fields {sorted(options)}, not both.")
    cfg = config or ProbeConfig(**options)
    out = prepare_out_dir(out, PROBE)
    if isinstance(suite, str):
        suite = get_suite(suite)
    if isinstance(model, str | Path) and is_regression_run(model):
        # The regression family has no tokens: same TD (Null task included) from the
        # emergence module, explained variance in place of accuracy.
        em = emergence(
            model,
            revisions=cfg.revisions,
            n_prompts=cfg.n_prompts,
            seed=cfg.seed,
            device=device,
            progress=progress,
        )
        series = series_from_emergence(em, str(model))
    else:
        series = td_over_checkpoints(
            model,
            cfg.revisions,
            suite=suite,
            k=cfg.k,
            n_prompts=cfg.n_prompts,
            seed=cfg.seed,
            probe=cfg.probe,
            device=device,
            progress=progress,
        )
    save_series(series, out)
    (out / CONFIG_FILE).write_text(
        json.dumps(portable({**cfg.to_dict(), "model": series.model}), indent=2)
    )
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
