"""The demo: train (or reuse) the default synthetic model and write the figures.

``tvlens demo`` calls :func:`run_demo`. It writes to its own folder, ``runs/demo/`` (never
into the repository's tracked files): the ICL accuracy per task over checkpoints, the
accuracy by demonstration index (the emergence of ICL), a ``README.md`` that says what each
figure shows, and ``demo.json`` with the configuration and the numbers behind the figures.
``tvlens regenerate`` (:func:`regenerate_figures`) writes the same into the committed
``figures/``, keeping the part of its README the demo does not write. Its last step trains
an ATV (adaptive task vectors, Kang et al. 2025) on ATV's synthetic setting
(``tvlens.atv.data``; its own small target, next to the demo's run) and compares it with
zero-shot and ICL on held-out queries.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from tvlens.compare.demo_step import _atv_step, atv_dirs
from tvlens.demo.report import DemoResult, top_position_by_layer, write_report
from tvlens.errors import TVLensError
from tvlens.evaluation.icl import evaluate_icl
from tvlens.extraction.methods import FunctionVector, HendelTaskVector
from tvlens.extraction.registry import DEFAULT_METHOD
from tvlens.injection.evaluate import (
    evaluate_task_vectors,
    format_table,
    save_report,
    summary_table,
)
from tvlens.models.loading import load_model
from tvlens.patching import run_patching
from tvlens.plotting import (
    plot_accuracy_by_demo,
    plot_emergence,
    plot_head_aie,
    plot_icl_over_checkpoints,
    plot_layer_sweep,
    plot_patching,
    plot_td_by_layer,
    save_figure,
    write_json,
)
from tvlens.probing.emergence import emergence, series_from_emergence
from tvlens.runs import (
    ATV_RUN,
    DEMO,
    DEMO_FILE,
    TRAIN_SYNTHETIC,
    folder_kind,
    prepare_out_dir,
    tidy_on_error,
)
from tvlens.runs.checkpoints import list_checkpoints
from tvlens.runtime import configure_threads
from tvlens.training.config import DEFAULT_PRESET, get_preset
from tvlens.training.runner import train_synthetic
from tvlens.training.train import load_run_config

# Task decodability in the demo: a handful of checkpoints, 50 prompts per task (seconds).
# The extraction methods the demo scores (its figures and README describe these two).
DEMO_METHODS = (HendelTaskVector.name, FunctionVector.name)
N_PROBE_CHECKPOINTS = 6
N_PROBE_PROMPTS = 50


def _run_state(run_dir: Path, preset: str) -> str:
    """'missing', 'stale', 'complete' (all checkpoints of the preset) or 'partial'."""
    cfg = load_run_config(run_dir)
    if cfg is None:
        return "missing"
    if cfg.get("preset") != preset:
        raise TVLensError(
            f"{str(run_dir)!r} holds a run of preset {cfg.get('preset')!r}, not {preset!r}: "
            "pass another --run-dir or --retrain."
        )
    if cfg.get("config") != get_preset(preset).to_dict():
        return "stale"  # the preset changed since this run was made: train it again
    have = [c.step for c in list_checkpoints(run_dir)]
    return "complete" if have and have[-1] == get_preset(preset).steps else "partial"


# The demo's own output folder, and the committed one that `tvlens regenerate` rewrites.
DEMO_DIR = Path("runs/demo")
FIGURES_DIR = Path("figures")
DEMO_RUN_DIR = Path("runs/default")


@tidy_on_error
def run_demo(
    figures_dir: str | Path = DEMO_DIR,
    run_dir: str | Path = DEMO_RUN_DIR,
    preset: str = DEFAULT_PRESET,
    device: str | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> DemoResult:
    """Train (or reuse / resume) the preset's model in ``run_dir``; write figures and report.

    For a given preset and thread count (:mod:`tvlens.runtime`) the numbers are the same on
    every run: training, prompts and evaluation are seeded; only ``seconds`` and
    ``trained_in_this_run`` differ. The default thread policy (``auto``) follows the
    machine's load, so the thread count, and with it the last digits, can change from run to
    run; ``--threads 1`` (what ``tvlens regenerate`` uses) gives the committed numbers."""
    t0 = time.time()
    get_preset(preset)  # an unknown preset is refused before any folder is made
    run_dir, figures_dir = Path(run_dir), Path(figures_dir)
    state, (atv_target_dir, atv_dir) = _prepare_run(run_dir, figures_dir, preset, retrain)
    if state != "complete":
        train_synthetic(
            run_dir, preset=preset, resume=state == "partial", device=device, progress=progress
        )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = load_run_config(run_dir)["config"]
    res = DemoResult(run_dir, figures_dir)
    res.figures["icl_over_checkpoints"] = save_figure(
        plot_icl_over_checkpoints(metrics), figures_dir / "icl_over_checkpoints"
    )
    res.figures["accuracy_by_demo"] = save_figure(
        plot_accuracy_by_demo(metrics), figures_dir / "accuracy_by_demo"
    )
    # The final checkpoint through the public loader and evaluator: what a user gets.
    model = load_model(run_dir, device=device)
    suite = model.training_suite()
    final_eval = evaluate_icl(
        model, suite, k=cfg["k"], n_prompts=64, seed=1, template=cfg["template"]
    )
    task_vectors = _task_vector_figures(model, suite, res, progress)
    patching = _patching_figures(model, res, progress)
    task_encoding = _task_encoding_figures(run_dir, res, device, progress)
    atv = _atv_step(res, atv_target_dir, atv_dir, device, retrain, progress)

    ck = metrics["checkpoints"]
    emergence_step = next((c["step"] for c in ck if c["mean_icl_accuracy"] >= 0.9), None)
    res.summary = {
        "run_dir": str(run_dir),
        "preset": preset,
        "config": cfg,
        "model": model.spec.to_dict(),
        "checkpoint_steps": [c["step"] for c in ck],
        "first_step_with_icl_accuracy_0.9": emergence_step,
        "final_icl_accuracy_training_eval": ck[-1]["mean_icl_accuracy"],
        "final_icl_evaluation": final_eval.to_dict(),
        "final_accuracy_by_demo": ck[-1]["accuracy_by_demo"],
        "task_vectors": task_vectors,
        "patching": patching,
        "task_encoding": task_encoding,
        "atv": atv,
        "seconds": round(time.time() - t0, 1),
        "trained_in_this_run": state != "complete",
    }
    res.save(figures_dir / DEMO_FILE)  # DemoResult.load reads it back
    write_report(res, ck)
    return res


def _prepare_run(
    run_dir: Path, figures_dir: Path, preset: str, retrain: bool
) -> tuple[str, tuple[Path, Path]]:
    """Check every folder the demo writes before anything is trained, written or deleted
    (--retrain deletes only a tvlens training run); the state of the training run to reuse
    ('missing', 'partial' or 'complete'; a stale one is deleted) and the ATV step's folders."""
    prepare_out_dir(run_dir, TRAIN_SYNTHETIC)
    prepare_out_dir(figures_dir, DEMO)
    atv_target_dir, atv_dir = atv_dirs(run_dir)
    prepare_out_dir(atv_target_dir, TRAIN_SYNTHETIC)
    prepare_out_dir(atv_dir, ATV_RUN)
    state = "stale" if retrain else _run_state(run_dir, preset)
    if state == "stale" and folder_kind(run_dir) == TRAIN_SYNTHETIC:
        shutil.rmtree(run_dir)
    return ("missing" if state == "stale" else state), (atv_target_dir, atv_dir)


def _task_vector_figures(model, suite, res: DemoResult, progress: bool) -> dict:
    """Every registered extraction method on the final checkpoint (task vectors, Hendel et
    al.; function vectors, Todd et al.; and any the user registered): the layer sweep, the
    heads' AIE, ``task_vectors.md``; the summary for ``demo.json``."""
    # The task vector (Hendel et al.) and the function vector (Todd et al.) on the final
    # checkpoint: the two the demo's figures and README describe (residual writes at one
    # layer, a layer curve each). The other registered methods (ICV, I2CL, state vectors,
    # LTV) are `tvlens vectors --methods all`: I2CL calibrates and LTV trains per task.
    report = evaluate_task_vectors(model, suite, methods=DEMO_METHODS, progress=progress)
    save_report(report, res.run_dir / "task_vectors")
    tv_data = report.to_dict(DEFAULT_METHOD)
    fd = res.figures_dir
    res.figures["layer_sweep"] = save_figure(plot_layer_sweep(tv_data), fd / "layer_sweep")
    mean_aie = torch.stack([h.aie for h in report.heads.values()]).mean(0)
    res.figures["head_aie"] = save_figure(
        plot_head_aie(mean_aie, "Function-vector heads: AIE averaged over tasks"),
        fd / "head_aie",
    )
    table = summary_table(report)
    (fd / "task_vectors.md").write_text(format_table(table))
    return {"summary": tv_data["summary"], "config": tv_data["config"], "table": table}


def _task_encoding_figures(run_dir: Path, res: DemoResult, device: str | None,
                           progress: bool) -> dict:  # fmt: skip
    """Task encoding: TD at every layer and per task over a handful of the run's checkpoints:
    the first and the last few (the series is log-spaced, so the last few span the second
    half of training, where ICL emerges). The layer-wise probe and the emergence figures."""
    steps = [c.step for c in list_checkpoints(run_dir)]
    idx = sorted({0} | set(range(max(len(steps) - (N_PROBE_CHECKPOINTS - 1), 0), len(steps))))
    em = emergence(
        run_dir,
        revisions=[steps[i] for i in idx],
        n_prompts=N_PROBE_PROMPTS,
        device=device,
        progress=progress,
    )
    em_d = em.to_dict()
    write_json(run_dir / "emergence.json", em_d)
    res.figures["td_by_layer"] = save_figure(
        plot_td_by_layer(series_from_emergence(em, str(run_dir)).to_dict()),
        res.figures_dir / "td_by_layer",
    )
    res.figures["emergence"] = save_figure(plot_emergence(em_d), res.figures_dir / "emergence")
    return {
        "steps": em.steps,
        "td_by_layer": em.td,
        "peak_layer": em.peak_layer,
        "onsets": em_d["onsets"],
        "n_prompts": N_PROBE_PROMPTS,
    }


def _patching_figures(model, res: DemoResult, progress: bool) -> dict:
    """Head patching (exact and attribution) and residual patching by position, on clean
    prompts vs the same prompts with shuffled labels; figures and ``patching.json``."""

    heads = run_patching(model, None, component="heads", method="both", n_prompts=16,
                         progress=progress)  # fmt: skip
    resid = run_patching(model, None, component="resid", positions="each", n_prompts=4,
                         progress=progress)  # fmt: skip
    fd = res.figures_dir
    res.figures["patching_heads"] = save_figure(plot_patching(heads.exact), fd / "patching_heads")
    res.figures["patching_heads_attribution"] = save_figure(
        plot_patching(heads.attribution), fd / "patching_heads_attribution"
    )
    res.figures["patching_resid"] = save_figure(plot_patching(resid.exact), fd / "patching_resid")
    data = {"heads": heads.to_dict(), "resid": resid.to_dict()}
    write_json(fd / "patching.json", data)
    return {
        "heads_clean": heads.exact.clean_metric,
        "heads_corrupted": heads.exact.corrupted_metric,
        "heads_top": [{**w, "effect": e} for w, e in heads.exact.top(3)],
        "heads_spearman_attribution_vs_exact": heads.spearman,
        "resid_top": [{**w, "effect": e} for w, e in resid.exact.top(3)],
        "resid_top_by_layer": top_position_by_layer(resid.exact),
        "n_prompts_heads": heads.config["n_prompts"],
        "n_prompts_resid": resid.config["n_prompts"],
    }


def regenerate_figures(device: str | None = None, progress: bool = True) -> DemoResult:
    """Rewrite everything the demo owns in the committed ``figures/`` (its figures,
    ``demo.json``, ``patching.json``, ``task_vectors.md``, ``figures.json`` and its part of
    ``README.md``) from today's code, training ``runs/default`` if it is missing or stale.
    The other folders under ``figures/`` come from the commands their README sections name.
    Then the numbers the README and the docs quote are refilled from the new JSON
    (:mod:`tvlens.demo.quoted`), when run from the repository's root."""
    # imported here: `python -m tvlens.demo.quoted` runs that module as __main__
    from tvlens.demo.quoted import refill_docs

    # One thread, whatever the policy: the committed numbers depend on the thread count (the
    # order of floating-point sums), and `auto` would follow the machine's load.
    configure_threads(1)
    result = run_demo(FIGURES_DIR, DEMO_RUN_DIR, DEFAULT_PRESET, device=device, progress=progress)
    if Path("README.md").is_file() and Path("docs").is_dir():
        for page in refill_docs("."):
            print(f"refilled the quoted numbers of {page}")
    return result
