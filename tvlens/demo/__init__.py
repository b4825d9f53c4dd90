"""The demo, an application over every stage: train (or reuse) the default synthetic model, run
each analysis on it and write the figures with a report (:mod:`.run`, what ``tvlens demo`` and
``tvlens regenerate`` call; the report's text: :mod:`.report`). The ATV step lives with the
comparison (:mod:`tvlens.compare.demo_step`)."""

from tvlens.compare.demo_step import atv_summary
from tvlens.demo.report import (
    KEEP_MARKER,
    DemoResult,
    resid_summary,
    top_position_by_layer,
    write_readme,
    write_report,
)
from tvlens.demo.run import (
    DEMO_DIR,
    DEMO_RUN_DIR,
    FIGURES_DIR,
    N_PROBE_CHECKPOINTS,
    N_PROBE_PROMPTS,
    regenerate_figures,
    run_demo,
)

__all__ = [
    "DEMO_DIR",
    "DEMO_RUN_DIR",
    "FIGURES_DIR",
    "KEEP_MARKER",
    "N_PROBE_CHECKPOINTS",
    "N_PROBE_PROMPTS",
    "DemoResult",
    "atv_summary",
    "regenerate_figures",
    "resid_summary",
    "run_demo",
    "top_position_by_layer",
    "write_readme",
    "write_report",
]
