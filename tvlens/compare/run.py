"""The side-by-side comparison (Kang et al. 2025's claims, measured): zero-shot, k-shot ICL,
task and function vectors (told the test task: oracle label), ELICIT-style retrieval, LoRA,
prefix tuning, ATV as published, ATV at matched budgets and the equal-rank pair, on instructed
in-domain tasks and on unseen tasks no trained method ever sees, plus the "no instruction"
ablation rows. The methods are registered in :mod:`tvlens.compare.registry`.

The work is a list of cells (:func:`tvlens.compare.setup.compare_cells`): first each
swept method's variants (learning rate, ATV's λ) trained on seed 0 and scored on dev; then
every method's reported cells, one per seed, with the variant of best dev accuracy (seed 0
reuses the sweep's best-dev weights). Each cell is one JSON file written atomically
(``DIR/cells/``): a stopped compare resumes without redoing them. Trained methods train with
:func:`tvlens.compare.baselines.engine_fit` in ``DIR/runs/<cell>``. Several processes share the
cells (:mod:`tvlens.compare.workers`).

Output (:mod:`tvlens.compare.report`): ``DIR/config.json``, ``DIR/comparison.{json,csv}``,
``DIR/table.md``, ``DIR/categories.md``, ``DIR/verdicts.md``, ``DIR/overlap.csv`` and the
figures (bars, heatmap, learning curves, overlap).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import tvlens
from tvlens.compare.config import DEFAULT_PRESET, PLAN_FIELDS, REPORT_FIELDS
from tvlens.compare.fitting import patience_ran_out
from tvlens.compare.registry import METHODS, as_method_name, get_method_spec, variant_label
from tvlens.compare.report import write_outputs
from tvlens.compare.setup import (  # noqa: F401  (the public names of the compare)
    CPU_IN_DOMAIN,
    CPU_UNSEEN,
    FV_ALIAS,
    PRESETS,
    SELECTED,
    Cell,
    CompareConfig,
    CompareContext,
    CompareData,
    cell_path,
    cell_state,
    compare_cells,
    compare_context,
    get_compare_preset,
    load_compare_data,
    merged,
    method_seeds,
    resolve_task,
    run_name,
    selection,
    sweep_variants,
)
from tvlens.compare.workers import (
    available_cores,
    device_name,
    resolve_workers,
    run_cells,
    run_parallel,
)
from tvlens.errors import TVLensError
from tvlens.evaluation.icl import record_predictions
from tvlens.models.loading import TVModel, default_device, load_model
from tvlens.plotting.atv import plot_compare_bars
from tvlens.results import Result
from tvlens.runs import (
    COMPARE,
    COMPARISON_FILE,
    CONFIG_FILE,
    KIND_KEY,
    prepare_out_dir,
    tidy_on_error,
)
from tvlens.runs.checkpoints import write_json_atomically
from tvlens.runs.portable import portable

BEST_WEIGHTS = "best.safetensors"  # a sweep cell's best-dev weights, in its run folder


def _per_task(first: np.ndarray, exact: np.ndarray, prompts: Sequence) -> dict[str, dict]:
    names = np.array([p.task for p in prompts])
    return {
        t: {"first_token": float(first[names == t].mean()),
            "exact_match": float(exact[names == t].mean()), "n": int((names == t).sum())}
        for t in dict.fromkeys(names.tolist())
    }  # fmt: skip


def build_method(ctx: CompareContext, method: str, seed: int, variant: dict | None = None):
    """The registered method ``method`` for one cell (:mod:`tvlens.compare.registry`)."""
    spec = get_method_spec(method)
    return spec.build_class().for_cell(ctx, method, seed, variant, **spec.kwargs)


def _predictions(rec: list, prompts: list, tokenizer: Any) -> list[str | None]:
    """What the method said per query, in ``prompts``' order (None where it was not recorded):
    the decoded argmax at each answer position given the gold answer before it, i.e. greedy
    decoding up to and including its first wrong token (tvlens.evaluation.icl)."""
    said = {(task, x): ids for task, x, ids in rec}
    out = []
    for p in prompts:
        ids = said.get((p.task, p.query.input))
        out.append(None if ids is None or tokenizer is None else tokenizer.decode(ids).strip())
    return out


def _score(m: Any, prompts: list) -> tuple[dict[str, Any], float, float]:
    """Per-query correctness of ``prompts`` in their order (scored shortest first), per-task
    accuracy, the mean over tasks; and the seconds and mean prompt tokens it took."""
    order, lens = m.by_length(prompts)
    pos = {id(p): i for i, p in enumerate(prompts)}
    t0 = time.perf_counter()
    with record_predictions() as rec:
        first_s, exact_s = m.correctness(order)
    dt = time.perf_counter() - t0
    first = np.zeros(len(prompts), dtype=bool)
    exact = np.zeros(len(prompts), dtype=bool)
    for p, f, e in zip(order, first_s, exact_s, strict=True):
        first[pos[id(p)]], exact[pos[id(p)]] = f, e
    tasks = _per_task(first, exact, prompts)
    # A group's accuracy is the mean over its tasks (each task weighs the same), as the paper
    # reports.
    return (
        {
            "first_token": float(np.mean([t["first_token"] for t in tasks.values()])),
            "exact_match": float(np.mean([t["exact_match"] for t in tasks.values()])),
            "tasks": tasks,
            "first": first.astype(int).tolist(),
            "exact": exact.astype(int).tolist(),
            "pred": _predictions(
                rec, prompts, getattr(getattr(m, "target", None), "tokenizer", None)
            ),
        },
        dt,
        float(np.mean(lens)),
    )


def _same_run(cfg: CompareConfig, sweep: dict[str, Any]) -> bool:
    """Whether a sweep cell's run is the run a reported cell of the same seed would make:
    with the same budget, or stopped by patience before its shorter budget ran out (the
    learning rate is constant, so more epochs would not change it)."""
    if cfg.sweep_epochs is None or cfg.sweep_epochs >= cfg.epochs:
        return True
    return patience_ran_out(sweep.get("epochs_run", 0), sweep.get("best_epoch", 0), cfg.patience)


def run_cell(ctx: CompareContext, cell: Cell) -> dict[str, Any]:
    """Fit the cell's method and score it: a sweep cell on dev only (its best-dev weights
    kept), a reported cell on both groups' test queries, in the training instructions and in
    the held-out one."""
    spec = get_method_spec(cell.method)
    data = ctx.data if spec.instructed else ctx.data.bare()
    cfg = ctx.cfg
    if cell.is_sweep:
        variant = next(v for v in sweep_variants(cfg, cell.method, ctx.out)
                       if variant_label(v) == cell.variant)  # fmt: skip
        sel = None
        if cfg.sweep_epochs is not None:  # the sweep's own, shorter budget
            cfg = cfg.with_overrides(epochs=cfg.sweep_epochs)
    else:
        sel = selection(ctx.cfg, ctx.out, cell.method)
        if sel is None:
            raise TVLensError(f"{cell}: its sweep cells are not done yet.")
        variant = sel["variant"]
    sub = CompareContext(cfg, ctx.target, data, ctx.out, ctx.device, ctx.template,
                         ctx.progress, ctx.cache)  # fmt: skip
    m = build_method(sub, cell.method, cell.seed, variant)
    head = {"method": cell.method, "variant": cell.variant, "seed": cell.seed,
            "variant_values": variant}  # fmt: skip
    if m.skip_reason:
        return {**head, "skipped": m.skip_reason}
    m.run_dir = ctx.out / "runs" / run_name(cell)
    # A method that reads no demonstrations of the test task sees only in-domain queries.
    in_domain_only = spec.trained or not spec.demonstrations
    fit_on = data.in_domain if in_domain_only else merged(*data.groups().values())
    if spec.trained and cfg.seed_train_queries:  # each seed its own training queries
        fit_on = data.seeded_train(cell.seed)
    t0 = time.perf_counter()
    source = sel["source"] if sel else None
    best = None
    if source is not None and cell.seed == 0 and _same_run(cfg, source["info"]):
        best = ctx.out / "runs" / run_name(Cell(cell.method, sel["label"], 0)) / BEST_WEIGHTS
    if best is not None and best.is_file():
        m.restore(best)
        info = {**source["info"], "reused": f"sweep cell {sel['label']}"}
    else:
        info = m.fit(fit_on) or {}
    fit_s = time.perf_counter() - t0
    info["trained_on_tasks" if spec.trained else "fitted_on_tasks"] = sorted(
        {p.task for p in fit_on.train}
    )
    if cell.is_sweep:
        m.save_best(m.run_dir / BEST_WEIGHTS)
        return {**head, "train_seconds": round(fit_s, 3), "info": info}
    info["selection"] = {"label": sel["label"], "dev": sel["dev"]}
    groups, infer_s, n_q, tokens = {}, 0.0, 0, []
    for g, splits in data.groups().items():
        groups[g] = {}
        sets = {"train": splits.test}
        if data.instructed:
            sets["heldout"] = data.heldout(splits.test)
        for name, prompts in sets.items():
            res, dt, toks = _score(m, prompts)
            groups[g][name] = res
            if name == "train":
                infer_s, n_q = infer_s + dt, n_q + len(prompts)
                tokens.append(toks)
        if hasattr(m, "retrieval_report"):
            info.setdefault("retrieved", {})[g] = m.retrieval_report(splits.test)
    return {
        **head,
        "path": m.path,
        "trainable_params": int(m.trainable_parameters()),
        "train_seconds": round(fit_s, 3),
        "infer_seconds_per_query": infer_s / max(n_q, 1),
        "prompt_tokens_per_query": float(np.mean(tokens)),
        "virtual_tokens": int(getattr(m, "virtual_tokens", 0)),
        "instructed": data.instructed,
        "groups": groups,
        "info": info,
    }


# ---------------------------------------------------------------------------- the loop


@dataclass
class CompareResult(Result):
    """What :func:`run_compare` returns: the folder, the configuration, per method its row
    (``summary``), the markdown table, the cells computed in this call (the others were
    reused) and the seconds it took. ``to_dataframe()``: one row per method and group
    (``ci_low`` / ``ci_high``: the 95% interval of exact match, tasks > queries > seeds);
    ``plot()``: exact match with 95% intervals per method; ``save`` / ``load``
    (``CompareResult.load(out / "comparison.json")`` reads back what the run wrote)."""

    out: Path
    config: CompareConfig
    summary: dict[str, Any]
    table: str  # markdown (DIR/table.md)
    ran: list[Cell]
    seconds: float

    def __str__(self) -> str:
        """The table, the verdicts on the paper's claims, and what this call computed."""
        verdicts = self.out / "verdicts.md"
        return "\n".join([
            self.table, verdicts.read_text() if verdicts.is_file() else "",
            f"{len(self.ran)} cell(s) computed, the others reused; wrote "
            f"{self.out / 'comparison.csv'} ({self.seconds:.0f} s)",
        ])  # fmt: skip

    def rows(self) -> dict[str, dict[str, Any]]:
        """The methods that ran (not skipped), by name."""
        return {m: r for m, r in self.summary.items()
                if not m.startswith("_") and "skipped" not in r}  # fmt: skip

    def to_dataframe(self):

        out = []
        for m, r in self.rows().items():
            for key in ("in_domain", "in_domain_heldout", "unseen", "unseen_heldout"):
                if f"{key}_first_token_mean" not in r:
                    continue
                out.append({
                    "method": m, "group": key.replace("_heldout", ""),
                    "instructions": "heldout" if key.endswith("_heldout") else "train",
                    "first_token": r[f"{key}_first_token_mean"],
                    "first_token_std": r[f"{key}_first_token_std"],
                    "ci_low": r[f"{key}_ci"][0], "ci_high": r[f"{key}_ci"][1],
                    "exact_match": r[f"{key}_exact_match_mean"],
                    "exact_match_std": r[f"{key}_exact_match_std"], "seeds": len(r["seeds"]),
                    "trained": r["trained"], "oracle_label": r["oracle_label"],
                    "trainable_params": r["trainable_params"],
                })  # fmt: skip
        return pd.DataFrame(out)

    def plot(self, **kwargs: Any):

        return plot_compare_bars(self.rows(), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "config": self.config.to_dict(), "table": self.table,
                "ran": [str(c) for c in self.ran], "seconds": self.seconds,
                "methods": self.summary}  # fmt: skip


def _check_out(out: Path, cfg: CompareConfig) -> CompareConfig:
    """The rule of every run folder (new, empty or a compare), then: the same configuration.
    Returns ``cfg`` with each plan field (``PLAN_FIELDS``: the widest ``sweep_widen``,
    ``sweep_joint`` once true) at the largest value the folder was run with: a grid widened
    or completed once stays so (its reported cells were chosen on it; a smaller plan would
    read them as stale and train the old choice again)."""
    prepare_out_dir(out, COMPARE)
    path = out / CONFIG_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
        ran = old.get("config") or {}
        for k in PLAN_FIELDS:  # a plan field only grows (more sweep cells, never fewer)
            v, now = ran.get(k), getattr(cfg, k)
            if type(v) is type(now) and v > now:
                cfg = cfg.with_overrides(**{k: v})
        fp = cfg.fingerprint()  # stored with portable paths (tvlens.runs.portable)
        saved = CompareConfig.upgrade(old.get("fingerprint") or {})
        for k in (*REPORT_FIELDS, *PLAN_FIELDS):  # saved before they left the fingerprint
            saved.pop(k, None)
        if saved not in (fp, portable(fp)):
            raise TVLensError(
                f"{str(out)!r} holds a comparison with another configuration; use the same "
                "preset and options to resume it, or choose another --out."
            )
    return cfg


@tidy_on_error
def run_compare(
    target: str | TVModel | None = None,
    out: str | Path = "runs/compare",
    preset: str = DEFAULT_PRESET,
    config: CompareConfig | None = None,
    device: str | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    workers: int | str = 1,
    **overrides: Any,
) -> CompareResult:
    """Run (or resume) the comparison and write its outputs in ``out``.

    Args:
        target: The frozen target (a name, folder or tvlens run; or a loaded model). Default:
            the preset's.
        preset: ``tiny``, ``cpu`` or ``gpu``; ``config`` replaces it.
        stop_after: Stop (as if killed) after computing this many cells.
        workers: Processes that compute cells at once, each with its own copy of the target
            and ``cores // workers`` torch threads; ``"auto"``: one per core (at most 4) on
            a CPU, one on an accelerator. Cells are claimed through files, so processes
            started by hand on the same ``out`` share the work too.
        overrides: Any :class:`CompareConfig` field (``seeds=3``, ``data_dir=...``), a
            method family's block or some of its fields (``peft={"lora_rank": 4}``), or one
            setting by its flat name (``lora_rank=4``);
            ``methods=[...]`` takes names (``vector:icv``: any extraction method's
            baseline) and the user's own methods as
            :class:`~tvlens.compare.registry.MethodSpec` objects, e.g.
            ``peft_method("my_lora", LoraConfig(r=4, target_modules=["q_proj"]))``.
    """
    t0 = time.time()
    out = Path(out)
    user = [m for m in overrides.get("methods") or [] if not isinstance(m, str)]
    if user:
        if workers != 1:
            raise TVLensError(
                "Methods defined in this process (MethodSpec objects) need workers=1: spawned "
                "processes do not see them (register them in an importable module instead)."
            )
        overrides["methods"] = [as_method_name(m) for m in overrides["methods"]]
    cfg = (config or get_compare_preset(preset)).with_overrides(**overrides)
    if cfg.data_dir is not None:  # the same folder however it was written
        cfg = cfg.with_overrides(data_dir=str(Path(cfg.data_dir).expanduser().resolve()))
    if isinstance(target, TVModel):
        model = target
        cfg = cfg.with_overrides(target=target.spec.path or target.spec.name)
    else:
        cfg = cfg.with_overrides(target=target) if target else cfg
        if not cfg.target:
            raise TVLensError("No target model: pass --target.")
        device = device or default_device()
        model = None
    n_workers = resolve_workers(workers, device or str(target.device), loaded=model is not None)
    cfg = _check_out(out, cfg)
    if model is None:
        model = load_model(cfg.target, revision=cfg.target_revision, device=device)
    ctx = compare_context(cfg, model, out, progress)
    device, template, data = ctx.device, ctx.template, ctx.data
    out.mkdir(parents=True, exist_ok=True)
    cells = compare_cells(cfg, out)
    pending = [c for c in cells if cell_state(cfg, out, c) != "done"]
    n_workers = 1 if stop_after is not None else max(1, min(n_workers, len(pending)))
    threads = torch.get_num_threads()
    if n_workers > 1:
        threads = max(1, available_cores() // n_workers)
    desc = device_name(device, threads, n_workers)
    write_json_atomically(
        out / CONFIG_FILE,
        {KIND_KEY: COMPARE, "tvlens": tvlens.__version__,
         "preset": None if config is not None else preset, "config": cfg.to_dict(),
         "fingerprint": cfg.fingerprint(), "template": template,
         "target": model.spec.to_dict(), "data": data.describe(), "device": desc,
         "workers": n_workers, "torch_threads": threads},
    )  # fmt: skip
    if n_workers == 1:
        ran = run_cells(ctx, cells, run_cell, stop_after)
    else:
        ran = run_parallel(ctx, cells, pending, n_workers, threads, run_cell)
    summary, table, doc = write_outputs(out, cfg, data, desc, model.tokenizer)
    res = CompareResult(out, cfg, summary, table, ran, time.time() - t0)
    # what readers of comparison.json know, and the result: CompareResult.load reads it back
    write_json_atomically(out / COMPARISON_FILE, res.saved(extra=doc))
    return res


__all__ = [
    "METHODS",
    "PRESETS",
    "Cell",
    "CompareConfig",
    "CompareContext",
    "CompareData",
    "CompareResult",
    "get_compare_preset",
    "load_compare_data",
    "run_cell",
    "run_compare",
]
