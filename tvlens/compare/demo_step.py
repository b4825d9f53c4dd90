"""The demo's ATV step (:func:`tvlens.demo.run_demo`): ATV trained on the synthetic setting and
compared with the target zero-shot and with ICL, its numbers and the report paragraph that
says only what they show."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from tvlens.atv.config import get_preset as get_atv_preset
from tvlens.atv.data import SYNTHETIC_TARGET, get_atv_suite
from tvlens.atv.model import WEIGHTS_FILE
from tvlens.atv.train import train_atv, train_synthetic_target
from tvlens.compare.methods import ICL, ZeroShot, compare
from tvlens.compare.tuned import ATVMethod
from tvlens.plotting import (
    plot_method_comparison,
    save_figure,
)
from tvlens.runs import ATV_RUN, TRAIN_SYNTHETIC, folder_kind
from tvlens.runs.portable import portable
from tvlens.training.config import get_preset
from tvlens.training.train import load_run_config

# ATV in the demo: the `tiny` preset on the synthetic setting (~40 s for its target, ~20 s for
# the generator on 2 cores), compared with the target zero-shot and with as many
# demonstrations as the target was trained with.
ATV_PRESET = "tiny"


def atv_dirs(run_dir: str | Path) -> tuple[Path, Path]:
    """The demo's ATV folders, next to its training run: the synthetic setting's target
    (``RUN-atv-target``) and the ATV run (``RUN-atv``)."""
    run_dir = Path(run_dir)
    return run_dir.with_name(f"{run_dir.name}-atv-target"), run_dir.with_name(f"{run_dir.name}-atv")


def _clear_stale(folder: Path, kind: str, config: dict, retrain: bool) -> None:
    """Delete ``folder`` when it holds a tvlens run of ``kind`` made with another
    configuration (or ``retrain``), so that it is trained again; anything else is kept."""
    saved = load_run_config(folder)
    if saved is None or folder_kind(folder) != kind:
        return
    # Paths in the saved config are stored portable (tvlens.runs.portable).
    if retrain or saved.get("config") not in (config, portable(config)):
        shutil.rmtree(folder)


def _atv_step(
    res: Any, target_dir: Path, atv_dir: Path, device: str | None, retrain: bool,
    progress: bool,
) -> dict:  # fmt: skip
    """``res``: the demo's ``DemoResult`` (its figures folder and figures). Train (or reuse /
    resume) the synthetic setting's target and a ``tiny`` ATV on it;
    score zero-shot, k-shot ICL and ATV on the held-out test queries; the figure."""

    t0 = time.time()
    target_cfg = get_preset("tiny").with_overrides(**SYNTHETIC_TARGET).to_dict()
    _clear_stale(target_dir, TRAIN_SYNTHETIC, target_cfg, retrain)
    atv_cfg = get_atv_preset(ATV_PRESET).with_overrides(target=str(target_dir))
    _clear_stale(atv_dir, ATV_RUN, atv_cfg.to_dict(), retrain)
    trained = not (atv_dir / WEIGHTS_FILE).is_file()
    # resume=True: a finished run is reused, a stopped one continued, a missing one started.
    train_synthetic_target(target_dir, device=device, resume=True, progress=progress)
    run = train_atv(atv_dir, config=atv_cfg, resume=True, device=device, progress=progress)
    cfg, atv = run.config, run.atv
    k = SYNTHETIC_TARGET["k"]
    methods = [ZeroShot(atv.target, cfg.eval_batch_size),
               ICL(atv.target, k=k, seed=cfg.seed, batch_size=cfg.eval_batch_size),
               ATVMethod(atv=atv, batch_size=cfg.eval_batch_size)]  # fmt: skip
    results = {r.method: r.to_dict() for r in compare(methods, run.splits, "test")}
    data = {
        "target_run": str(target_dir),
        "atv_run": str(atv_dir),
        "preset": ATV_PRESET,
        "tasks": {t.name: t.description for t in get_atv_suite(cfg.suite)},
        "split": "test",
        "queries_per_task": cfg.n_test,
        "icl_k": k,
        "epochs": cfg.epochs,
        "dev_accuracy_by_epoch": [c["mean_dev_accuracy"] for c in run.metrics["checkpoints"]],
        "methods": results,
        "atv_minus_zero_shot": results["atv"]["mean_first_token"]
        - results["zero-shot"]["mean_first_token"],
        "seconds": round(time.time() - t0, 1),
        "trained_in_this_run": trained,
    }
    res.figures["atv_comparison"] = save_figure(
        plot_method_comparison(
            data, f"ATV against zero-shot and {k}-shot ICL (synthetic setting, test queries)"
        ),
        res.figures_dir / "atv_comparison",
    )
    return data


def atv_summary(atv: dict) -> str:
    """What the ATV comparison shows, only where the numbers show it: ATV above zero-shot on
    every task (or not), and how ICL compares with both."""
    m = atv["methods"]
    zs, icl, a = m["zero-shot"], m[f"icl-{atv['icl_k']}"], m["atv"]
    tasks = list(a["tasks"])
    gains = [a["tasks"][t]["first_token"] - zs["tasks"][t]["first_token"] for t in tasks]
    za, ia, aa = zs["mean_first_token"], icl["mean_first_token"], a["mean_first_token"]
    out = []
    if min(gains) > 0:
        out.append(
            f"ATV is above zero-shot on every task (mean {aa:.2f} against {za:.2f}, "
            f"+{aa - za:.2f}) with no demonstrations and no task id: from the query alone, the "
            "generator's vectors make the frozen target do the task the query names."
        )
    elif aa <= za:
        out.append(f"ATV ({aa:.2f}) is not above zero-shot ({za:.2f}) here.")
    else:
        worse = [t for t, g in zip(tasks, gains, strict=True) if g <= 0]
        out.append(
            f"ATV is above zero-shot on average ({aa:.2f} against {za:.2f}) but not on "
            f"{', '.join(worse)}."
        )
    k = atv["icl_k"]
    if ia <= za:
        out.append(
            f"{k} demonstrations do not help this target ({k}-shot ICL {ia:.2f}, not above "
            "zero-shot)."
        )
    if aa > ia:
        out.append(f"ATV is also above {k}-shot ICL, which sees the task's demonstrations.")
    return " ".join(out)


def _atv_report(a: dict) -> list[str]:
    m = a["methods"]
    names = list(m)

    def per_task(name: str) -> str:
        return " / ".join(f"{v['first_token']:.2f}" for v in m[name]["tasks"].values())

    tasks = ", ".join(f"`{t}` ({d})" for t, d in a["tasks"].items())
    return [
        "## atv_comparison.png",
        "![ATV against zero-shot and ICL](atv_comparison.png)",
        "",
        "Adaptive task vectors (Kang et al. 2025) on their synthetic setting: a small tvlens "
        "model trained on first / last of symbol lists is the frozen target; the tasks are "
        f"{tasks}, told apart by the query's length only. A generator (a trainable copy of the "
        "target, `tiny` preset: "
        f"{m['atv']['trainable_parameters']:,} trainable parameters, {a['epochs']} epochs; dev "
        f"accuracy by epoch {', '.join(f'{x:.2f}' for x in a['dev_accuracy_by_epoch'])}) reads "
        "the query alone and adds one vector to every block. First-token accuracy on "
        f"{a['queries_per_task']} held-out test queries per task ("
        + "; ".join(f"{n} {m[n]['mean_first_token']:.2f}, per task {per_task(n)}" for n in names)
        + "). "
        + atv_summary(a),
        "",
    ]
