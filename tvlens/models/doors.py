"""The cheap checks every runner makes first (issue 29): a model or suite name that cannot
load, an output folder or file the run may not write, refused in one line before torch,
transformers or TransformerLens are imported. The runners
(``tvlens.{injection,patching,probing,evaluation,training}.runner``, importable without torch)
call :func:`check_run_inputs` first, then import the stage that does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tvlens.models.sources import check_model_name
from tvlens.runs import FILE_KINDS, check_out_dir, check_out_file
from tvlens.tasks.registry import check_suite_name


def check_run_inputs(
    kind: str, model: Any = None, suite: Any = None, out: str | Path | None = None
) -> None:
    """Raise the :class:`~tvlens.errors.TVLensError` the run of ``kind`` would raise later for a
    ``model`` or ``suite`` name or path that cannot load, or an ``out`` it may not write
    (:func:`~tvlens.runs.check_out_dir`; a file for the kinds in :data:`~tvlens.runs.FILE_KINDS`).
    Model and suite objects are left to the run. Nothing is imported or written."""
    check_model_name(model)
    if isinstance(suite, str | Path):
        check_suite_name(str(suite))
    if out is not None:
        (check_out_file if kind in FILE_KINDS else check_out_dir)(out, kind)
