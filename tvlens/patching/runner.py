"""What ``tvlens patch`` runs, importable without torch: :func:`run_patching` refuses a bad
model, suite or output folder at once (:func:`~tvlens.models.doors.check_run_inputs`), then
imports :mod:`tvlens.patching.run`, which does the work (issue 29)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvlens.models.doors import check_run_inputs
from tvlens.runs import PATCH

if TYPE_CHECKING:
    from tvlens.models.tvmodel import TVModel
    from tvlens.patching.config import PatchConfig
    from tvlens.patching.run import PatchingRun
    from tvlens.tasks.core import TaskSuite


def run_patching(
    model: TVModel | str,
    out: str | Path | None,
    suite: TaskSuite | str | None = None,
    config: PatchConfig | None = None,
    revision: str | None = None,
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> PatchingRun:
    """Patch a component of ``model`` on prompts of ``suite`` (default: its training suite)
    as ``config`` says (a :class:`~tvlens.patching.config.PatchConfig`, or its fields as keyword
    ``options``: ``component="resid"``, ``k=4``...) and, with ``out``, write
    ``out/patching.json``, ``out/config.json`` and the heatmap
    ``out/patching_{component}.{html,png}`` (``..._attribution`` too with ``method="both"``).
    A model or suite that cannot load, or an ``out`` holding files tvlens did not write, is
    refused before torch is imported.
    """
    check_run_inputs(PATCH, model=model, suite=suite, out=out)
    # start-up time: torch is imported only after the cheap checks
    from tvlens.patching.run import run_patching as run

    return run(model, out, suite, config, revision, device, progress, **options)
