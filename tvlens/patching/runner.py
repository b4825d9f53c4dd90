"""What ``tvlens patch`` runs: :func:`run_patching`, importable without torch. It refuses a bad
model, suite or output folder at once (:func:`~tvlens.models.doors.check_run_inputs`, issue
29), then imports the patching stage, which does the work. Its signature, defaults and
docstring are written here only (issue 30)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvlens.errors import ConfigError
from tvlens.models.doors import check_run_inputs
from tvlens.patching.config import PatchConfig
from tvlens.runs import CONFIG_FILE, PATCH, PATCHING_FILE, prepare_out_dir, tidy_on_error
from tvlens.runs.portable import portable

if TYPE_CHECKING:
    from tvlens.models.tvmodel import TVModel
    from tvlens.patching.run import PatchingRun
    from tvlens.tasks.core import TaskSuite


@tidy_on_error
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
    # start-up time: torch and the stage are imported only after the cheap checks
    from tvlens.models.loading import model_and_suite  # loads the model: after the checks
    from tvlens.patching.exact import patch  # torch: after the checks
    from tvlens.patching.metrics import AnswerProb  # torch too
    from tvlens.patching.run import PatchingRun, patching_prompts  # torch too
    from tvlens.plotting import plot_patching, save_figure  # after the checks

    if config is not None and options:
        raise ConfigError(f"Pass config= or its fields {sorted(options)}, not both.")
    cfg = config or PatchConfig(**options)
    if out is not None:
        out = prepare_out_dir(out, PATCH)
    model, suite = model_and_suite(model, suite, revision, device)
    component, positions, method, head_act = cfg.component, cfg.positions, cfg.method, cfg.head_act
    corruption, n_prompts, seed, max_batch = cfg.corruption, cfg.n_prompts, cfg.seed, cfg.max_batch
    tasks = list(cfg.tasks) if cfg.tasks is not None else None
    k = cfg.k if cfg.k is not None else int(model.spec.train_info.get("k", 5))
    clean, corrupted = patching_prompts(model, suite, k, n_prompts, seed=seed, tasks=tasks)
    metric = AnswerProb.from_batch(clean)
    if corruption == "shuffled":
        pair: tuple[Any, Any] = (clean, corrupted)
        source: str = "clean"
    else:  # ablate each component of the clean run itself
        pair, source = (clean, clean), corruption
    config = {
        **cfg.to_dict(),
        "model": model.spec.name,
        "revision": model.spec.revision,
        "suite": suite.name,
        "metric": "probability of the clean answer's first token at the query",
        "k": k,
        "prompt_bos": model.prompt_bos,
        "n_prompts": len(clean),
        "n_tokens": int(clean.tokens.shape[1]),
    }
    kw = {"head_act": head_act, "source": source}
    exact = attribution = None
    if method in ("exact", "both"):
        exact = patch(model, *pair, metric, component, positions, max_batch=max_batch,
                      progress=progress, **kw)  # fmt: skip
    if method in ("attribution", "both"):
        attribution = patch(model, *pair, metric, component, positions, method="attribution",
                            progress=progress, **kw)  # fmt: skip
    run = PatchingRun(exact, attribution, config)
    if out is not None:
        run.save(out / PATCHING_FILE)  # PatchingRun.load(out / "patching.json") reads it back
        (out / CONFIG_FILE).write_text(json.dumps(portable(config), indent=2) + "\n")
        for res in (exact, attribution):
            if res is not None:
                suffix = "" if res is run.main else f"_{res.method}"
                save_figure(plot_patching(res), out / f"patching_{component}{suffix}")
    return run
