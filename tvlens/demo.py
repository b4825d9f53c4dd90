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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from tvlens.compare.demo_step import _atv_report, _atv_step, atv_dirs, atv_summary  # noqa: F401
from tvlens.errors import TVLensError
from tvlens.evaluation.icl import evaluate_icl
from tvlens.extraction.registry import (
    ALL,
    DEFAULT_METHOD,
    expand_methods,
    get_extraction_method,
    method_object,
)
from tvlens.injection.evaluate import (
    evaluate_task_vectors,
    format_table,
    save_report,
    summary_table,
)
from tvlens.models.loading import load_model
from tvlens.patching import run_patching
from tvlens.plotting import (
    SavedFigure,
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
from tvlens.results import Result
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
from tvlens.training.config import DEFAULT_PRESET, get_preset
from tvlens.training.train import load_run_config, train_synthetic

# Task decodability in the demo: a handful of checkpoints, 50 prompts per task (seconds).
N_PROBE_CHECKPOINTS = 6
N_PROBE_PROMPTS = 50


@dataclass
class DemoResult(Result):
    """What :func:`run_demo` returns and writes as ``demo.json`` (``DemoResult.load`` reads it
    back): the folders, the figures written and ``summary``, the numbers behind them (the
    JSON's top level). ``to_dataframe()``: the task-vector table of the final checkpoint."""

    run_dir: Path
    figures_dir: Path
    figures: dict[str, SavedFigure] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return self.summary

    def to_dataframe(self):
        return pd.DataFrame(self.summary.get("task_vectors", {}).get("table", []))

    def plot(self, **kwargs):
        raise TVLensError(
            f"A DemoResult has no single figure: the demo wrote {len(self.figures)} in "
            f"{str(self.figures_dir)!r} (its .figures); to_dataframe() gives the table to plot."
        )

    def __str__(self) -> str:
        s = self.summary
        return "\n".join([
            f"run: {self.run_dir}  figures: {self.figures_dir}  ({s['seconds']} s)",
            f"ICL accuracy 0.9 first reached at step {s['first_step_with_icl_accuracy_0.9']};"
            f" final accuracy {s['final_icl_evaluation']['mean_first_token']:.3f}",
            *(f"  {name}: {f.png or f.html}" for name, f in self.figures.items()),
        ])  # fmt: skip


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
# figures/README.md: the text after this line is not the demo's and is kept when it is rewritten.
KEEP_MARKER = "<!-- Not written by tvlens demo: kept when the demo rewrites this file. -->"


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
    ``trained_in_this_run`` differ."""
    t0 = time.time()
    get_preset(preset)  # an unknown preset is refused before any folder is made
    run_dir, figures_dir = Path(run_dir), Path(figures_dir)
    # Both folders are checked before anything is trained, written or deleted: --retrain
    # deletes only a tvlens training run.
    prepare_out_dir(run_dir, TRAIN_SYNTHETIC)
    prepare_out_dir(figures_dir, DEMO)
    atv_target_dir, atv_dir = atv_dirs(run_dir)
    prepare_out_dir(atv_target_dir, TRAIN_SYNTHETIC)
    prepare_out_dir(atv_dir, ATV_RUN)
    state = "stale" if retrain else _run_state(run_dir, preset)
    if state == "stale" and folder_kind(run_dir) == TRAIN_SYNTHETIC:
        shutil.rmtree(run_dir)
    if state == "stale":
        state = "missing"
    if state != "complete":
        train_synthetic(
            run_dir, preset=preset, resume=state == "partial", device=device, progress=progress
        )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = load_run_config(run_dir)
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
    cfg = config["config"]
    final_eval = evaluate_icl(
        model, suite, k=cfg["k"], n_prompts=64, seed=1, template=cfg["template"]
    )
    # Every registered extraction method on the final checkpoint (task vectors, Hendel et
    # al.; function vectors, Todd et al.; and any the user registered).
    report = evaluate_task_vectors(model, suite, methods=expand_methods(ALL), progress=progress)
    save_report(report, run_dir / "task_vectors")
    tv_data = report.to_dict(DEFAULT_METHOD)
    res.figures["layer_sweep"] = save_figure(plot_layer_sweep(tv_data), figures_dir / "layer_sweep")
    mean_aie = torch.stack([h.aie for h in report.heads.values()]).mean(0)
    res.figures["head_aie"] = save_figure(
        plot_head_aie(mean_aie, "Function-vector heads: AIE averaged over tasks"),
        figures_dir / "head_aie",
    )
    table = summary_table(report)
    (figures_dir / "task_vectors.md").write_text(format_table(table))
    patching = _patching_figures(model, res, progress)

    # Task encoding: TD at every layer and per task over a handful of the run's checkpoints:
    # the first and the last few (the series is log-spaced, so the last few span the second
    # half of training, where ICL emerges). The layer-wise probe and the emergence figures.
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
        figures_dir / "td_by_layer",
    )
    res.figures["emergence"] = save_figure(plot_emergence(em_d), figures_dir / "emergence")
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
        "task_vectors": {
            "summary": tv_data["summary"],
            "config": tv_data["config"],
            "table": table,
        },
        "patching": patching,
        "task_encoding": {
            "steps": em.steps,
            "td_by_layer": em.td,
            "peak_layer": em.peak_layer,
            "onsets": em_d["onsets"],
            "n_prompts": N_PROBE_PROMPTS,
        },
        "atv": atv,
        "seconds": round(time.time() - t0, 1),
        "trained_in_this_run": state != "complete",
    }
    res.save(figures_dir / DEMO_FILE)  # DemoResult.load reads it back
    _write_report(res, ck)
    return res


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


def top_position_by_layer(result) -> list[dict]:
    """For each layer of a ``[layer, pos]`` patching result, the position whose patch has the
    largest effect: its label, its role in the prompt and the effect. Role: ``last token``, a
    ``demonstration label`` (a position right after the separator the prompt ends with, e.g.
    ``->``: where each demonstration's answer sits) or ``other``."""
    effect = result.effect()
    words = [lab.split(" ", 1)[-1] for lab in result.pos_labels]
    last = effect.shape[1] - 1
    out = []
    for i, layer in enumerate(result.layers):
        pos = int(effect[i].argmax())
        if pos == last:
            role = "last token"
        elif pos > 0 and words and words[pos - 1] == words[last]:
            role = "demonstration label"
        else:
            role = "other"
        label = words[pos] if words else str(pos)
        out.append({"layer": layer, "pos": pos, "label": label, "role": role,
                    "effect": float(effect[i, pos])})  # fmt: skip
    return out


def resid_summary(by_layer: list[dict]) -> str:
    """One sentence on where the largest residual patch sits, only where the numbers show a
    pattern: demonstration labels in the lower blocks, then the last token (or the last token
    everywhere); empty otherwise."""
    roles = [r["role"] for r in by_layer]
    if all(r == "last token" for r in roles):
        return "The last token has the largest effect in every block."
    if "last token" not in roles:
        return ""
    b = roles.index("last token")
    if (
        b > 0
        and all(r == "demonstration label" for r in roles[:b])
        and all(r == "last token" for r in roles[b:])
    ):
        lo, hi = by_layer[0]["layer"], by_layer[b - 1]["layer"]
        blocks = f"block {lo}" if lo == hi else f"blocks {lo}–{hi}"
        return (
            f"The largest effect sits at a demonstration label in {blocks} and at the last "
            f"token from block {by_layer[b]['layer']} on: the task information moves from the "
            "demonstrations to the last token, where the task vector is read."
        )
    return ""


def _method_sentence(name: str) -> str:
    """How an extraction method builds its vector and writes it in, from its class."""
    m = method_object(name)
    how = m.how_written()
    return (f"The {m.title or m.name} ({m.description}) {how} the residual at the last "
            "token of zero-shot test prompts")  # fmt: skip


def _write_report(res: DemoResult, ck: list[dict]) -> None:
    s = res.summary
    cfg = s["config"]
    k = cfg["k"]
    tvs = s["task_vectors"]["summary"]
    chosen = "; ".join(
        f"{get_extraction_method(m).label} {tvs[m]['task_vector']:.2f} ({tvs[m]['recovered']:.0%} "
        "of ICL)"
        for m in s["task_vectors"]["config"]["methods"]
    )
    by_demo = ", ".join(f"{x:.2f}" for x in s["final_accuracy_by_demo"])
    te = s["task_encoding"]
    td_last = ", ".join(f"{x:.2f}" for x in te["td_by_layer"][-1])
    lines = [
        "# tvlens demo figures",
        "",
        "Written by `tvlens demo` (see `demo.json` for the configuration and numbers).",
        f"Model: {cfg['arch']} with {cfg['n_layers']} layers, d_model {cfg['d_model']}, "
        f"{cfg['n_heads']} heads, trained from scratch on the `{cfg['suite']['name']}` suite "
        f"({', '.join(f'{a}={b}' for a, b in cfg['suite'].items() if a != 'name')}), "
        f"{k} demonstrations per prompt, {cfg['steps']} steps"
        + (
            f", with the task-vector prompting loss (weight {cfg['tv_loss_weight']}, block "
            f"{cfg['tv_loss_layer']}; see docs/guides/training.md)"
            if cfg.get("tv_loss_weight")
            else ""
        )
        + "; checkpoints at "
        f"{', '.join(str(x) for x in s['checkpoint_steps'])}.",
        "",
        "## icl_over_checkpoints.png",
        "![ICL accuracy over checkpoints](icl_over_checkpoints.png)",
        "",
        "Query accuracy (first answer token) of every task at every checkpoint (thin lines), "
        "their mean (black) and the loss on the answer tokens (dotted, right axis). The "
        + (
            f"model reaches mean accuracy 0.9 at step {s['first_step_with_icl_accuracy_0.9']}"
            if s["first_step_with_icl_accuracy_0.9"] is not None
            else "model does not reach mean accuracy 0.9 at any checkpoint"
        )
        + f" and ends at {s['final_icl_accuracy_training_eval']:.2f}. The final checkpoint, "
        "loaded through "
        "`load_model` and scored by `evaluate_icl` on fresh prompts, gets "
        f"{s['final_icl_evaluation']['mean_first_token']:.2f}.",
        "",
        "## accuracy_by_demo.png",
        "![Accuracy by demonstration index](accuracy_by_demo.png)",
        "",
        "Accuracy on the answer of each demonstration (index i has i examples before it) and "
        "of the query. The first answer has no context to tell which task the prompt is. "
        f"Final accuracies by index: {by_demo}." + _by_demo_summary(s["final_accuracy_by_demo"]),
        "",
        "## layer_sweep.png",
        "![Task-vector accuracy by layer](layer_sweep.png)",
        "",
        "Each task is split into train / dev / test queries. "
        + " ".join(f"{_method_sentence(m)}." for m in s["task_vectors"]["config"]["methods"])
        + " Lines: mean test accuracy over tasks for each layer; dashed: ICL and zero-shot "
        f"accuracy on the same queries (ICL {tvs['icl']:.2f}, zero-shot {tvs['zero_shot']:.2f}). "
        f"At the layer chosen on dev queries: {chosen}.",
        "",
        "## head_aie.png",
        "![AIE per head](head_aie.png)",
        "",
        "Average indirect effect of each head (layer × head), averaged over tasks: the gain in "
        "probability of the correct answer when the head's last-token output on shuffled-label "
        "prompts is replaced by its mean on clean prompts. Per-task table: `task_vectors.md`.",
        "",
        *_patching_report(s["patching"]),
        "## td_by_layer.png",
        "![Task decodability by layer](td_by_layer.png)",
        "",
        "Task decodability (Han et al. 2025): the residual after each layer at the last query "
        f"token of {te['n_prompts']} prompts per task plus the Null task (random answers), "
        "each classified by its 10 nearest other points; one line per checkpoint "
        f"({', '.join(str(x) for x in te['steps'])}). Final checkpoint by layer: {td_last}; "
        f"peak layer {te['peak_layer']}.",
        "",
        "## emergence.png",
        "![Encoding and decoding over training](emergence.png)",
        "",
        "Per task over the same checkpoints: TD at the peak layer (top; black: all tasks), "
        "the query loss (middle) and accuracy (bottom): whether encoding (TD) and decoding "
        "(accuracy) rise together. Numbers: `runs/.../emergence.json`.",
        "",
        *_atv_report(s["atv"]),
    ]
    write_readme(res.figures_dir / "README.md", "\n".join(lines))


def write_readme(path: Path, report: str) -> None:
    """Write the demo's ``report`` to ``path``, keeping what an existing file holds after
    :data:`KEEP_MARKER` (sections of the committed ``figures/README.md`` the demo does not
    write, e.g. ``pretrained/``)."""
    kept = path.read_text().partition(KEEP_MARKER)[2] if path.is_file() else ""
    path.write_text(report + (f"\n{KEEP_MARKER}{kept}" if kept.strip() else "\n"))


def regenerate_figures(device: str | None = None, progress: bool = True) -> DemoResult:
    """Rewrite everything the demo owns in the committed ``figures/`` (its figures,
    ``demo.json``, ``patching.json``, ``task_vectors.md``, ``figures.json`` and its part of
    ``README.md``) from today's code, training ``runs/default`` if it is missing or stale.
    The other folders under ``figures/`` come from the commands their README sections name."""
    return run_demo(FIGURES_DIR, DEMO_RUN_DIR, DEFAULT_PRESET, device=device, progress=progress)


def _by_demo_summary(acc: list[float]) -> str:
    """What the accuracies by demonstration index say, when they say it: the answers with
    demonstrations before them clearly above the first one (by more than 0.2)."""
    if len(acc) < 2 or min(acc[1:]) - acc[0] <= 0.2:
        return ""
    return (
        f" Every answer with demonstrations before it ({min(acc[1:]):.2f}–{max(acc[1:]):.2f}) "
        f"is well above the first ({acc[0]:.2f}): the model infers the task in context."
    )


def _patching_report(p: dict) -> list[str]:
    def where(t: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in t.items() if k != "effect")

    top = p["heads_top"][0]
    rtop = p["resid_top"][0]
    by_layer = "; ".join(
        f"block {r['layer']}: `{r['label']}` ({r['role']}, {r['effect']:+.3f})"
        for r in p["resid_top_by_layer"]
    )
    return [
        "## patching_heads.png, patching_heads_attribution.png",
        "![Head patching](patching_heads.png)",
        "",
        f"Activation patching on {p['n_prompts_heads']} prompts: each head's output (`hook_z`, "
        "all positions) from clean prompts patched into the same prompts with shuffled "
        "demonstration labels; colour: the normalized effect on the probability of the correct "
        f"answer (0 = corrupted run, {p['heads_corrupted']:.2f}; 1 = clean run, "
        f"{p['heads_clean']:.2f}). Largest: {where(top)} ({top['effect']:+.3f}). "
        "`patching_heads_attribution.png` is the attribution-patching estimate (2 forward + 1 "
        "backward pass); its Spearman correlation with exact patching is "
        f"{p['heads_spearman_attribution_vs_exact']:.2f}.",
        "",
        "## patching_resid.png",
        "![Residual patching by position](patching_resid.png)",
        "",
        f"The residual stream entering each block, patched one position at a time "
        f"({p['n_prompts_resid']} prompts). Largest: {where(rtop)} ({rtop['effect']:+.3f}). "
        f"Position with the largest effect in each block: {by_layer}. "
        + resid_summary(p["resid_top_by_layer"]),
        "",
    ]
