"""Score a trained ATV run against zero-shot on its held-out queries (``tvlens atv eval``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tvlens.atv.config import ATVConfig
from tvlens.atv.data import get_atv_suite, split_queries
from tvlens.atv.model import ATV, WEIGHTS_FILE
from tvlens.compare.methods import ZeroShot, compare
from tvlens.compare.tuned import ATVMethod
from tvlens.errors import CheckpointError, TVLensError
from tvlens.plotting import plot_method_comparison
from tvlens.results import Report
from tvlens.runs import ATV_RUN, KIND_KEY
from tvlens.runs.folders import load_run_config


class ATVEvaluation(Report):
    """:func:`evaluate_run`'s result (``RUN/eval.json``): ``to_dataframe()`` has a row per
    (method, task), first-token and exact-match accuracy; ``plot()`` the bars per task."""

    def plot(self, **kwargs: Any):
        return plot_method_comparison(self.data, **kwargs)

    def __str__(self) -> str:
        """The evaluation as indented JSON (what ``tvlens atv eval`` prints)."""
        return json.dumps(self.to_dict(), indent=2)

    def rows(self) -> list[dict[str, Any]]:
        return [{"method": m, "task": t, **r}
                for m, d in self.data["methods"].items()
                for t, r in d["tasks"].items()]  # fmt: skip


def evaluate_run(
    run: str | Path,
    suite: dict | str | None = None,
    split: str = "test",
    device: str | None = None,
    write: bool = True,
) -> ATVEvaluation:
    """Zero-shot and ATV accuracy (first token and exact match, per task) on the run's
    ``split`` queries (or those of another ``suite``, split the same way); written to
    ``RUN/eval.json``."""
    run = Path(run)
    if split not in ("test", "dev", "train"):
        raise TVLensError(f"split must be 'test', 'dev' or 'train', got {split!r}.")
    saved = load_run_config(run)
    if saved is None or saved.get(KIND_KEY) != ATV_RUN:
        raise CheckpointError(f"{str(run)!r} is not an ATV run folder (no ATV config.json).")
    if not (run / WEIGHTS_FILE).is_file():
        raise CheckpointError(
            f"{str(run)!r} has no {WEIGHTS_FILE}: the run did not finish; resume it "
            "(tvlens atv train ... --resume)."
        )
    cfg = ATVConfig().with_overrides(**saved["config"])
    atv = ATV.load(run / WEIGHTS_FILE, device=device)
    suite_obj = get_atv_suite(suite if suite is not None else cfg.suite)
    splits = split_queries(suite_obj, cfg.n_train, cfg.n_dev, cfg.n_test, cfg.template, cfg.seed)
    methods = [ZeroShot(atv.target, cfg.eval_batch_size),
               ATVMethod(atv=atv, batch_size=cfg.eval_batch_size)]  # fmt: skip
    results = compare(methods, splits, split)
    by_name = {r.method: r.to_dict() for r in results}
    out = {
        "run": str(run),
        "suite": suite_obj.name,
        "split": split,
        "queries": len(getattr(splits, split)),
        "methods": by_name,
        "atv_minus_zero_shot": by_name["atv"]["mean_first_token"]
        - by_name["zero-shot"]["mean_first_token"],
    }
    result = ATVEvaluation(out)
    if write:
        result.save(run / "eval.json")  # ATVEvaluation.load(run / "eval.json") reads it back
    return result
