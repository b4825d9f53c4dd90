"""Plotly figures, one module per pipeline stage (training, vectors, probing, patching), written
by :mod:`tvlens.plotting.save`: interactive HTML always, static PNG where a browser is, and
which of the two in each folder's ``figures.json``."""

from tvlens.plotting.atv import plot_method_comparison
from tvlens.plotting.patching import plot_patching
from tvlens.plotting.probing import (
    plot_emergence,
    plot_perturbation,
    plot_projection,
    plot_td_by_layer,
    plot_td_heatmap,
    plot_td_vs_accuracy,
)
from tvlens.plotting.save import (
    FIGURES_FILE,
    NO_PNG_ENV,
    PNG_HINT,
    PngWarning,
    SavedFigure,
    png_skipped_reason,
    png_unavailable,
    save_figure,
    use_notebook_renderer,
    write_json,
)
from tvlens.plotting.style import PALETTE
from tvlens.plotting.tables import plot_table_bars
from tvlens.plotting.training import (
    plot_accuracy_by_demo,
    plot_finetune,
    plot_icl_accuracy,
    plot_icl_over_checkpoints,
)
from tvlens.plotting.vectors import (
    plot_exact_match_intervals,
    plot_head_aie,
    plot_layer_sweep,
    plot_recovered_heatmap,
)

__all__ = [
    "FIGURES_FILE",
    "NO_PNG_ENV",
    "PALETTE",
    "PNG_HINT",
    "PngWarning",
    "SavedFigure",
    "plot_accuracy_by_demo",
    "plot_emergence",
    "plot_exact_match_intervals",
    "plot_finetune",
    "plot_head_aie",
    "plot_icl_accuracy",
    "plot_icl_over_checkpoints",
    "plot_layer_sweep",
    "plot_method_comparison",
    "plot_patching",
    "plot_table_bars",
    "plot_perturbation",
    "plot_projection",
    "plot_recovered_heatmap",
    "plot_td_by_layer",
    "plot_td_heatmap",
    "plot_td_vs_accuracy",
    "png_skipped_reason",
    "png_unavailable",
    "save_figure",
    "use_notebook_renderer",
    "write_json",
]
