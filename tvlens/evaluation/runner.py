"""What ``tvlens eval`` runs, importable without torch: :func:`run_eval` refuses a bad model,
suite or output file at once (:func:`~tvlens.models.doors.check_run_inputs`), then imports
:mod:`tvlens.evaluation.icl`, which does the work (issue 29)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvlens.models.doors import check_run_inputs
from tvlens.runs import EVAL

if TYPE_CHECKING:
    from tvlens.evaluation.config import EvalConfig
    from tvlens.evaluation.icl import ICLEvaluation
    from tvlens.tasks.core import TaskSuite


def run_eval(
    model: Any,
    out: str | Path | None = None,
    suite: TaskSuite | str | None = None,
    config: EvalConfig | None = None,
    revision: str | None = None,
    device: str | None = None,
    progress: bool = True,
    **options: Any,
) -> ICLEvaluation:
    """``tvlens eval``: :func:`~tvlens.evaluation.icl.evaluate_icl` on ``model`` (a loaded
    model, or a name, folder or tvlens run with its ``revision``) and ``suite`` (default: the
    one the model was trained on), as ``config`` says (an
    :class:`~tvlens.evaluation.config.EvalConfig`, or its fields as ``options``); with ``out``,
    the config, the model's spec and the result are written there as JSON (a new file or an
    earlier eval result, never another file). A model or suite that cannot load, or an ``out``
    that is not new nor an eval result, is refused before torch is imported."""
    check_run_inputs(EVAL, model=model, suite=suite, out=out)
    # start-up time: torch is imported only after the cheap checks
    from tvlens.evaluation.icl import run_eval as run

    return run(model, out, suite, config, revision, device, progress, **options)
