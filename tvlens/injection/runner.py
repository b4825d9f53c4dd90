"""What ``tvlens vectors`` runs, importable without torch: :func:`run_task_vectors` refuses a
bad model, suite or output folder at once (:func:`~tvlens.models.doors.check_run_inputs`), then
imports :mod:`tvlens.injection.evaluate`, which does the work (issue 29: a bad path is
refused in under 2 s in a fresh interpreter)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvlens.models.doors import check_run_inputs
from tvlens.runs import VECTORS

if TYPE_CHECKING:
    from tvlens.extraction.config import VectorsConfig
    from tvlens.injection.evaluate import VectorReport
    from tvlens.models.tvmodel import TVModel
    from tvlens.tasks.core import TaskSuite


def run_task_vectors(
    model: TVModel | str,
    out: str | Path,
    suite: TaskSuite | str | None = None,
    config: VectorsConfig | None = None,
    revision: str | None = None,
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> VectorReport:
    """What ``tvlens vectors`` runs: evaluate, then write ``out/results.json``, the vectors
    (``out/vectors/{method}/{task}.safetensors``), ``out/table.md``, ``out/config.json`` and the
    figures ``out/layer_sweep.{html,png}`` (and ``out/head_aie.{html,png}`` for FV).

    ``config``, or its fields as keyword ``options`` (``methods="all"``, ``k=4``...): a
    :class:`~tvlens.extraction.config.VectorsConfig`. ``suite`` defaults to the suite the model was
    trained on. A model or suite that cannot load, or an ``out`` holding files tvlens did not
    write, is refused before torch is imported.
    """
    check_run_inputs(VECTORS, model=model, suite=suite, out=out)
    # start-up time: torch is imported only after the cheap checks
    from tvlens.injection.evaluate import run_task_vectors as run

    return run(model, out, suite, config, revision, device, progress, **options)
