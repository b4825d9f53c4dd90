"""What ``tvlens vectors`` runs: :func:`run_task_vectors`, importable without torch. It refuses
a bad model, suite or output folder at once (:func:`~tvlens.models.doors.check_run_inputs`,
issue 29: in under 2 s in a fresh interpreter), then imports :mod:`tvlens.injection.evaluate`,
which does the work. Its signature, defaults and docstring are written here only (issue 30)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvlens.errors import ConfigError
from tvlens.extraction.config import VectorsConfig
from tvlens.models.doors import check_run_inputs
from tvlens.runs import CONFIG_FILE, TABLE_FILE, VECTORS, prepare_out_dir, tidy_on_error

if TYPE_CHECKING:
    from tvlens.injection.evaluate import VectorReport
    from tvlens.models.tvmodel import TVModel
    from tvlens.tasks.core import TaskSuite


@tidy_on_error
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
    figures ``out/layer_sweep.{html,png}`` (and ``out/head_aie.{html,png}`` for FV), with
    the harness's ``out/harness.md``, ``out/recovered_heatmap`` and ``out/exact_match``
    (:func:`~tvlens.injection.evaluate.save_report`).

    ``config``, or its fields as keyword ``options`` (``methods="all"``, ``k=4``...): a
    :class:`~tvlens.extraction.config.VectorsConfig`. ``suite`` defaults to the suite the model was
    trained on. A model or suite that cannot load, or an ``out`` holding files tvlens did not
    write, is refused before torch is imported.
    """
    check_run_inputs(VECTORS, model=model, suite=suite, out=out)
    # start-up time: torch and the stage are imported only after the cheap checks
    import torch

    from tvlens.injection.evaluate import (  # torch: after the checks above
        evaluate_task_vectors,
        format_table,
        save_report,
        summary_table,
    )
    from tvlens.models.loading import model_and_suite  # loads the model: after the checks
    from tvlens.plotting import plot_head_aie, plot_layer_sweep, save_figure  # after the checks

    if config is not None and options:
        raise ConfigError(f"Pass config= or its fields {sorted(options)}, not both.")
    config = config or VectorsConfig().with_overrides(**options)  # old names too
    out = prepare_out_dir(out, VECTORS)
    model, suite = model_and_suite(model, suite, revision, device)
    report = evaluate_task_vectors(model, suite, config, progress=progress)
    primary = config.method_names()[0]
    save_report(report, out, primary=primary)
    data = report.to_dict(primary)
    (out / CONFIG_FILE).write_text(
        json.dumps(
            {
                **config.to_dict(),
                "model": model.spec.to_dict(),
                "suite": getattr(suite, "spec", {}),
                **report.config,
            },
            indent=2,
        )
        + "\n"
    )
    (out / TABLE_FILE).write_text(format_table(summary_table(report)))
    save_figure(plot_layer_sweep(data), out / "layer_sweep")
    if report.heads:
        mean_aie = torch.stack([h.aie for h in report.heads.values()]).mean(0)
        save_figure(
            plot_head_aie(mean_aie, "Function-vector heads: AIE averaged over tasks"),
            out / "head_aie",
        )
    return report
