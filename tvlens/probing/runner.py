"""What ``tvlens probe`` runs, importable without torch: :func:`run_probe` refuses a bad
model, suite or output folder at once (:func:`~tvlens.models.doors.check_run_inputs`), then
imports :mod:`tvlens.probing.run`, which does the work (issue 29)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvlens.models.doors import check_run_inputs
from tvlens.runs import PROBE

if TYPE_CHECKING:
    from tvlens.probing.config import ProbeConfig
    from tvlens.probing.series import TDSeries
    from tvlens.tasks.core import TaskSuite


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
    as HTML and PNG. ``model`` may be a model object. A model or suite that cannot load, or an
    ``out`` holding files tvlens did not write, is refused before torch is imported."""
    check_run_inputs(PROBE, model=model, suite=suite, out=out)
    # start-up time: torch is imported only after the cheap checks
    from tvlens.probing.run import run_probe as run

    return run(model, out, suite, config, device, progress, **options)
