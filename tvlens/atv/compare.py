"""The side-by-side comparison (Kang et al. 2025's claims, measured): zero-shot, k-shot ICL,
Hendel task vectors, function vectors, LoRA, prefix tuning, ATV as published, ATV at matched
parameter budgets, and a static (query-independent) ATV against LoRA of equal rank, on
in-domain tasks and on unseen tasks no trained method ever sees.

One loop over (method, seed) cells; every method is a :class:`tvlens.atv.methods.SteeringMethod`
fitted on the same training queries and scored the same way (first answer token over the whole
vocabulary, and greedy exact match). Each finished cell is one JSON file written atomically
(``DIR/cells/{method}__seed{s}.json``): a stopped compare resumes without redoing them. Trained
methods train through :func:`tvlens.training.engine.train_run` (``DIR/runs/{method}__seed{s}``).
Several processes (``workers``, or commands started by hand on the same ``DIR``) share the
cells: each claims the next free one through an exclusively created ``.claim`` file.

Output: ``DIR/config.json``, ``DIR/comparison.json``, ``DIR/comparison.csv`` (one row per
method), ``DIR/table.md``, ``DIR/bars.{html,png}`` and ``DIR/heatmap.{html,png}``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tvlens
from tvlens.atv.compare_setup import (  # noqa: F401  (the public names of the compare)
    CPU_IN_DOMAIN,
    CPU_UNSEEN,
    FV_ALIAS,
    METHODS,
    NEEDS_DEMOS,
    PRESETS,
    SEEDLESS,
    TRAINED,
    CompareConfig,
    CompareContext,
    CompareData,
    cell_path,
    compare_cells,
    compare_context,
    get_compare_preset,
    load_compare_data,
    merged,
    method_seeds,
    resolve_task,
)
from tvlens.errors import TVLensError
from tvlens.models.checkpoints import write_json_atomically
from tvlens.models.loading import TVModel, default_device, load_model
from tvlens.runs import COMPARE, COMPARISON_FILE, CONFIG_FILE, KIND_KEY, prepare_out_dir


def _per_task(first: np.ndarray, exact: np.ndarray, prompts: Sequence) -> dict[str, dict]:
    names = np.array([p.task for p in prompts])
    return {
        t: {"first_token": float(first[names == t].mean()),
            "exact_match": float(exact[names == t].mean()), "n": int((names == t).sum())}
        for t in dict.fromkeys(names.tolist())
    }  # fmt: skip


def run_cell(ctx: CompareContext, method: str, seed: int) -> dict[str, Any]:
    """Fit ``method`` with ``seed`` and score it on both groups' test queries."""
    from tvlens.atv.tuned import build_method

    m = build_method(ctx, method, seed)
    if m.skip_reason:
        return {"method": method, "seed": seed, "skipped": m.skip_reason}
    train_on = ctx.data.in_domain if method in TRAINED else merged(*ctx.data.groups().values())
    t0 = time.perf_counter()
    info = m.fit(train_on) or {}
    if method in TRAINED:  # recorded so that a test can check unseen tasks stay unseen
        info["trained_on_tasks"] = sorted({p.task for p in train_on.train})
    fit_s = time.perf_counter() - t0
    groups, infer_s, n_q, tokens = {}, 0.0, 0, []
    for g, splits in ctx.data.groups().items():
        prompts, lens = m.by_length(splits.test)
        t1 = time.perf_counter()
        first, exact = m.correctness(prompts)
        infer_s += time.perf_counter() - t1
        n_q += len(prompts)
        tokens.append(float(np.mean(lens)))
        groups[g] = {
            "first_token": float(first.mean()),
            "exact_match": float(exact.mean()),
            "tasks": _per_task(first, exact, prompts),
        }
    # A task's mean is over tasks (each task weighs the same), as the paper reports.
    for g in groups.values():
        g["first_token"] = float(np.mean([t["first_token"] for t in g["tasks"].values()]))
        g["exact_match"] = float(np.mean([t["exact_match"] for t in g["tasks"].values()]))
    return {
        "method": method,
        "seed": seed,
        "path": m.path,
        "trainable_params": int(m.trainable_parameters()),
        "train_seconds": round(fit_s, 3),
        "infer_seconds_per_query": infer_s / max(n_q, 1),
        "prompt_tokens_per_query": float(np.mean(tokens)),
        "virtual_tokens": int(getattr(m, "virtual_tokens", 0)),
        "needs_demonstrations": method in NEEDS_DEMOS,
        "groups": groups,
        "info": info,
    }


# ---------------------------------------------------------------------------- the loop


@dataclass
class CompareResult:
    out: Path
    config: CompareConfig
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    ran: list[tuple[str, int]]  # cells computed in this call (the others were reused)
    seconds: float


def _check_out(out: Path, cfg: CompareConfig) -> None:
    """The rule of every run folder (new, empty or a compare), then: the same configuration."""
    prepare_out_dir(out, COMPARE)
    path = out / CONFIG_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("fingerprint") != cfg.fingerprint():
            raise TVLensError(
                f"{str(out)!r} holds a comparison with another configuration; use the same "
                "preset and options to resume it, or choose another --out."
            )


def run_compare(
    target: str | TVModel | None = None,
    out: str | Path = "runs/compare",
    preset: str = "cpu",
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
        overrides: Any :class:`CompareConfig` field (``seeds=3``, ``methods=[...]``,
            ``data_dir=...``).
    """
    t0 = time.time()
    out = Path(out)
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
    _check_out(out, cfg)
    if model is None:
        model = load_model(cfg.target, revision=cfg.target_revision, device=device)
    ctx = compare_context(cfg, model, out, progress)
    device, template, data = ctx.device, ctx.template, ctx.data
    out.mkdir(parents=True, exist_ok=True)
    cells = compare_cells(cfg)
    pending = [c for c in cells if not cell_path(out, *c).is_file()]
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
        ran = run_cells(ctx, cells, stop_after)
    else:
        ran = _run_parallel(ctx, cells, pending, n_workers, threads)
    summary, rows = write_outputs(out, cfg, data, desc)
    return CompareResult(out, cfg, summary, rows, ran, time.time() - t0)


def run_cells(
    ctx: CompareContext,
    cells: Sequence[tuple[str, int]],
    stop_after: int | None = None,
    tag: str = "compare",
    announce: bool | None = None,
) -> list[tuple[str, int]]:
    """Compute the cells not yet on disk that no other live process has claimed."""
    announce = ctx.progress if announce is None else announce
    ran: list[tuple[str, int]] = []
    for method, seed in cells:
        path = cell_path(ctx.out, method, seed)
        if path.is_file():
            continue
        if stop_after is not None and len(ran) >= stop_after:
            break
        if not claim_cell(path):
            continue  # another process computes it
        try:
            if path.is_file():  # finished by another process since the check above
                continue
            if announce:
                print(f"[{tag}] {method} seed {seed}", flush=True)
            res = run_cell(ctx, method, seed)
            res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            res["torch_threads"] = torch.get_num_threads()
            write_json_atomically(path, res)
            ran.append((method, seed))
        finally:
            path.with_suffix(CLAIM).unlink(missing_ok=True)
    return ran


# ---------------------------------------------------------------------------- processes

CLAIM = ".claim"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def resolve_workers(workers: int | str, device: str, loaded: bool = False) -> int:
    """The number of compare processes: an int as given; ``"auto"``: one per core (at most
    4) on a CPU, where a second torch thread sped SmolLM2-135M up 1.4-1.5x and a second
    single-thread process 1.8x (2 cores); one on an accelerator or for a model passed
    already loaded (a process cannot share it)."""
    if workers == "auto":
        if loaded or not str(device).startswith("cpu"):
            return 1
        return max(1, min(4, available_cores()))
    try:
        n = int(workers)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise TVLensError(f"workers must be a positive integer or 'auto', got {workers!r}.")
    if n > 1 and loaded:
        raise TVLensError(
            "workers > 1 needs the target by name or folder (each process loads its own "
            "copy); a loaded model runs in this process only: pass workers=1."
        )
    return n


def claim_cell(path: Path) -> bool:
    """Claim a cell for this process: an exclusively created ``.claim`` file holding the
    host and pid. A claim whose process is gone on this host (a killed compare) is taken."""
    claim = path.with_suffix(CLAIM)
    claim.parent.mkdir(parents=True, exist_ok=True)
    me = f"{platform.node()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _claim_alive(claim):
                return False
            claim.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return True
    return False


def _claim_alive(claim: Path) -> bool:
    try:
        host, pid = claim.read_text().split()
    except (OSError, ValueError):
        return False  # unreadable or half-written by a killed process
    if host != platform.node():
        return True  # another machine's process: nothing here can tell whether it lives
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker(target: str, revision: str | None, out: str, cfg: CompareConfig, device: str,
            threads: int, index: int) -> None:  # fmt: skip
    """One extra compare process: its own target, the same cells, claimed one at a time."""
    torch.set_num_threads(threads)
    model = load_model(target, revision=revision, device=device)
    ctx = compare_context(cfg, model, Path(out), progress=False)
    run_cells(ctx, compare_cells(cfg), tag=f"compare w{index}", announce=True)


def _run_parallel(
    ctx: CompareContext,
    cells: Sequence[tuple[str, int]],
    pending: Sequence[tuple[str, int]],
    n: int,
    threads: int,
) -> list[tuple[str, int]]:
    """This process and ``n - 1`` spawned ones compute the cells; each claims the next free
    one. Numbers equal the one-process run up to float summation order (thread counts)."""
    import multiprocessing as mp

    spawn = mp.get_context("spawn")
    procs = [
        spawn.Process(target=_worker, args=(ctx.cfg.target, ctx.cfg.target_revision,
                      str(ctx.out), ctx.cfg, ctx.device, threads, i), daemon=True)
        for i in range(1, n)
    ]  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for p in procs:
            p.start()
        run_cells(ctx, cells, tag="compare w0")
        for p in procs:
            p.join()
    finally:
        torch.set_num_threads(before)
        for p in procs:  # an exception here (Ctrl-C) stops the workers too
            if p.is_alive():
                p.terminate()
                p.join()
    failed = [i for i, p in enumerate(procs, 1) if p.exitcode != 0]
    missing = [c for c in cells if not cell_path(ctx.out, *c).is_file()]
    if failed and missing:
        raise TVLensError(
            f"Compare worker(s) {failed} failed (traceback above); cells not computed: "
            f"{[f'{m} seed {s}' for m, s in missing]}. Rerun the same command to resume."
        )
    return [c for c in pending if cell_path(ctx.out, *c).is_file()]


def device_name(device: str, threads: int | None = None, processes: int = 1) -> str:
    """The device in words; on a CPU its model, cores, and the processes and threads that
    ran (default: this process's torch threads)."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(0)})"
    cpu = platform.processor() or platform.machine()
    try:  # the CPU's model name where the OS says it (Linux)
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = threads or torch.get_num_threads()
    procs = f"{processes} processes x " if processes > 1 else ""
    return f"{device} ({cpu}, {os.cpu_count()} cores, {procs}{threads} threads)"


# ---------------------------------------------------------------------------- outputs


def _mean_std(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarize(cells: dict[str, list[dict]], cfg: CompareConfig) -> dict[str, Any]:
    """Per method: accuracy mean ± std over seeds (of the mean over tasks), per-task mean
    accuracy, parameters, times and prompt lengths. Inference time is relative to zero-shot
    run the same way (through the bridge, or the plain HF model for peft methods)."""
    zs = (cells.get("zero_shot") or [None])[0]
    ref = {}
    if zs is not None and "skipped" not in zs:
        ref = {"bridge": zs["infer_seconds_per_query"],
               "hf": zs["info"].get("hf_infer_seconds_per_query")}  # fmt: skip
    out: dict[str, Any] = {}
    for method, runs in cells.items():
        done = [r for r in runs if "skipped" not in r]
        if not done:
            out[method] = {"skipped": runs[0]["skipped"]}
            continue
        row: dict[str, Any] = {"seeds": [r["seed"] for r in done], "path": done[0]["path"]}
        for g in ("in_domain", "unseen"):
            for metric in ("first_token", "exact_match"):
                m, s = _mean_std([r["groups"][g][metric] for r in done])
                row[f"{g}_{metric}_mean"], row[f"{g}_{metric}_std"] = m, s
            tasks = done[0]["groups"][g]["tasks"]
            row[f"{g}_tasks"] = {
                t: float(np.mean([r["groups"][g]["tasks"][t]["first_token"] for r in done]))
                for t in tasks
            }
        row["trainable_params"] = done[0]["trainable_params"]
        row["train_seconds"] = float(np.mean([r["train_seconds"] for r in done]))
        infer = float(np.mean([r["infer_seconds_per_query"] for r in done]))
        base = ref.get(done[0]["path"])
        row["infer_seconds_per_query"] = infer
        row["infer_relative_to_zero_shot"] = infer / base if base else None
        row["prompt_tokens_per_query"] = float(
            np.mean([r["prompt_tokens_per_query"] for r in done])
        )
        row["virtual_tokens"] = done[0].get("virtual_tokens", 0)
        row["needs_demonstrations"] = done[0]["needs_demonstrations"]
        row["trained"] = method in TRAINED
        row["info"] = done[0].get("info", {})
        out[method] = row
    return out


def _csv(summary: dict[str, Any], data: CompareData) -> tuple[str, list[dict]]:
    tasks = [("in_domain", t) for t in data.in_domain.tasks] + [
        ("unseen", t) for t in data.unseen.tasks
    ]
    rows = []
    for method, r in summary.items():
        if "skipped" in r:
            rows.append({"method": method, "skipped": r["skipped"]})
            continue
        row = {"method": method}
        for g in ("in_domain", "unseen"):
            for metric in ("first_token", "exact_match"):
                row[f"{g}_{metric}_mean"] = round(r[f"{g}_{metric}_mean"], 4)
                row[f"{g}_{metric}_std"] = round(r[f"{g}_{metric}_std"], 4)
        rel = r["infer_relative_to_zero_shot"]
        row.update(
            seeds=len(r["seeds"]),
            trainable_params=r["trainable_params"],
            train_seconds=round(r["train_seconds"], 2),
            infer_ms_per_query=round(1000 * r["infer_seconds_per_query"], 3),
            infer_relative_to_zero_shot=None if rel is None else round(rel, 3),
            prompt_tokens_per_query=round(r["prompt_tokens_per_query"], 1),
            virtual_tokens=r["virtual_tokens"],
            needs_demonstrations=r["needs_demonstrations"],
            path=r["path"],
        )
        for g, t in tasks:
            row[f"{g}:{t}"] = round(r[f"{g}_tasks"][t], 4)
        rows.append(row)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue(), rows


def load_cells(out: Path, cfg: CompareConfig) -> dict[str, list[dict]]:
    cells: dict[str, list[dict]] = {}
    for method, seed in compare_cells(cfg):
        p = cell_path(out, method, seed)
        if p.is_file():
            cells.setdefault(method, []).append(json.loads(p.read_text()))
    return cells


def write_outputs(
    out: Path, cfg: CompareConfig, data: CompareData, device: str
) -> tuple[dict, list[dict]]:
    """``comparison.json``, ``comparison.csv`` and the figures, from the cells present;
    ``device`` in words (:func:`device_name`), as the cells were computed."""
    from tvlens.plotting import save_figure

    cells = load_cells(out, cfg)
    summary = summarize(cells, cfg)
    text, rows = _csv(summary, data)
    tmp = out / ".comparison.csv.tmp"
    tmp.write_text(text)
    tmp.replace(out / "comparison.csv")
    tmp = out / ".table.md.tmp"
    tmp.write_text(format_table(rows))
    tmp.replace(out / "table.md")
    missing = [c for c in compare_cells(cfg) if not cell_path(out, *c).is_file()]
    write_json_atomically(
        out / COMPARISON_FILE,
        {"tvlens": tvlens.__version__, "target": cfg.target, "device": device,
         "split": data.describe(), "scale": cfg.scale_note, "config": cfg.to_dict(),
         "complete": not missing, "missing_cells": [list(c) for c in missing],
         "metric": "first answer token over the whole vocabulary (argmax), and greedy exact "
                   "match; means over tasks, then mean ± std over seeds",
         "methods": summary},
    )  # fmt: skip
    if any("skipped" not in r for r in summary.values()):
        save_figure(plot_compare_bars(summary), out / "bars")
        save_figure(plot_compare_heatmap(summary, data), out / "heatmap", height=600)
    return summary, rows


def plot_compare_bars(summary: dict[str, Any], title: str = "Accuracy by method"):
    """Grouped bars: in-domain and unseen first-token accuracy per method, ± std over seeds."""
    import plotly.graph_objects as go

    names = [m for m, r in summary.items() if "skipped" not in r]
    fig = go.Figure()
    for g, label, color in (("in_domain", "in-domain", "#1f77b4"),
                            ("unseen", "unseen", "#ff7f0e")):  # fmt: skip
        fig.add_bar(
            x=names,
            y=[summary[m][f"{g}_first_token_mean"] for m in names],
            error_y={"type": "data", "array": [summary[m][f"{g}_first_token_std"] for m in names]},
            name=label,
            marker_color=color,
        )
    fig.update_layout(
        title=title, barmode="group", yaxis={"title": "first-token accuracy", "range": [0, 1]},
        template="plotly_white",
    )  # fmt: skip
    return fig


def plot_compare_heatmap(summary: dict[str, Any], data: CompareData, title: str | None = None):
    """Methods × tasks: mean first-token accuracy (unseen tasks marked with *)."""
    import plotly.graph_objects as go

    names = [m for m, r in summary.items() if "skipped" not in r]
    cols = [("in_domain", t) for t in data.in_domain.tasks] + [
        ("unseen", t) for t in data.unseen.tasks
    ]
    z = [[summary[m][f"{g}_tasks"][t] for g, t in cols] for m in names]
    labels = [t + ("*" if g == "unseen" else "") for g, t in cols]
    fig = go.Figure(
        go.Heatmap(z=z, x=labels, y=names, zmin=0, zmax=1, colorscale="Viridis",
                   colorbar={"title": "acc"})
    )  # fmt: skip
    fig.update_layout(
        title=title or "First-token accuracy per task (* unseen)", template="plotly_white",
        yaxis={"autorange": "reversed"},
    )  # fmt: skip
    return fig


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the CSV rows' main columns."""
    head = ["method", "in-domain", "unseen", "exact (in/unseen)", "trainable params",
            "train s", "infer × zero-shot", "prompt tokens"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "skipped" in r:
            why = r["skipped"].split(":")[0]
            lines.append(f"| {r['method']} | skipped: {why} |" + " |" * (len(head) - 2))
            continue
        rel = r["infer_relative_to_zero_shot"]
        lines.append(
            f"| {r['method']} | {r['in_domain_first_token_mean']:.3f} ± "
            f"{r['in_domain_first_token_std']:.3f} | {r['unseen_first_token_mean']:.3f} ± "
            f"{r['unseen_first_token_std']:.3f} | {r['in_domain_exact_match_mean']:.3f} / "
            f"{r['unseen_exact_match_mean']:.3f} | {r['trainable_params']:,} | "
            f"{r['train_seconds']:.1f} | {'-' if rel is None else f'{rel:.2f}'} | "
            f"{r['prompt_tokens_per_query']:.1f} |"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "METHODS",
    "PRESETS",
    "CompareConfig",
    "CompareContext",
    "CompareData",
    "CompareResult",
    "format_table",
    "get_compare_preset",
    "load_compare_data",
    "plot_compare_bars",
    "plot_compare_heatmap",
    "run_compare",
]
