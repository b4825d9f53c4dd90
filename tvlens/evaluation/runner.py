"""What ``tvlens eval`` runs: :func:`run_eval`, importable without torch. It refuses a bad
model, suite or output file at once (:func:`~tvlens.models.doors.check_run_inputs`, issue 29),
then imports :mod:`tvlens.evaluation.icl`, which does the work. Its signature, defaults and
docstring are written here only (issue 30)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvlens.evaluation.config import EvalConfig
from tvlens.models.doors import check_run_inputs
from tvlens.runs import EVAL, prepare_out_file

if TYPE_CHECKING:
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
    # start-up time: torch and the stage are imported only after the cheap checks
    from tvlens.evaluation.icl import evaluate_icl  # torch: after the checks
    from tvlens.models.loading import model_and_suite  # loads the model: after the checks

    cfg = (config or EvalConfig()).with_overrides(**options)
    if out is not None:
        prepare_out_file(out, cfg.kind)
    m, s = model_and_suite(model, suite, revision, device)
    res = evaluate_icl(m, s, k=cfg.k, n_prompts=cfg.n_prompts, seed=cfg.seed,
                       template=cfg.template, batch_size=cfg.batch_size,
                       progress=progress)  # fmt: skip
    if out is not None:
        # ICLEvaluation.load(out) reads it back
        res.save(out, extra={**cfg.to_dict(), "model": m.spec.to_dict()})
    return res
