"""Benchmark: task decodability (TD) at every layer against TD at one layer, and how TD time
grows with the number of prompts per task.

    python bench/probe.py [--model runs/default] [--device cpu] [--threads 1]

TD at all layers takes one forward pass (hooks keep only the last-query-token row at every
layer) and one leave-one-out kNN per layer; TD at one layer takes a pass that stops after that
layer and one kNN. Prints the median of ``--repeats`` interleaved runs (after a warm-up) and
the ratio all / one (goal: <= 1.5x), then the all-layer time (forward and kNN apart) for a
series of prompts-per-task counts, all measured in this run. The model defaults to
``runs/default`` (then ``/work/main/runs/default``); without one the ``tiny`` preset is trained
into a temporary folder (about 10 s).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tvlens.extraction import residual_at_query
from tvlens.models import load_model
from tvlens.probing import task_decodability
from tvlens.tasks import sample_prompts, tokenize_prompts
from tvlens.tasks.synthetic import null_task

ROOT = Path(__file__).resolve().parents[1]


def prompts_for(model, n_prompts: int, k: int, seed: int = 0):
    suite = model.training_suite()
    tasks = list(suite) + [null_task(suite)]
    prompts, labels = [], []
    for i, t in enumerate(tasks):
        ps = sample_prompts(t, k, n_prompts, seed=seed + 1000 * i)
        prompts += ps
        labels += [t.name] * len(ps)
    return tokenize_prompts(prompts, model, padding_side="left"), labels


def td_all(model, batch, labels):
    t0 = time.perf_counter()
    hidden = residual_at_query(model, batch)
    t1 = time.perf_counter()
    tds = [task_decodability(h, labels).overall for h in hidden]
    return tds, t1 - t0, time.perf_counter() - t1


def td_one(model, batch, labels, layer: int):
    hidden = residual_at_query(model, batch, layers=[layer])
    return task_decodability(hidden[0], labels).overall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model or run folder (default: runs/default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-prompts", type=int, default=100, help="prompts per task")
    ap.add_argument("--series", default="25,50,100,200,400", help="prompts per task to time")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layer", type=int, default=None, help="the one layer (default: middle)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = args.model
    if path is None:
        for cand in (ROOT / "runs" / "default", Path("/work/main/runs/default")):
            if (cand / "config.json").is_file():
                path = str(cand)
                break
    if path is None:
        from tvlens.training import train_synthetic

        path = str(Path(tempfile.mkdtemp()) / "tiny")
        train_synthetic(path, preset="tiny", device=args.device, progress=False)
    model = load_model(path, device=args.device)
    k = int(model.spec.train_info.get("k", 5))
    layer = model.n_layers // 2 if args.layer is None else model.check_layer(args.layer)
    n_tasks = len(list(model.training_suite())) + 1
    print(
        f"model {path} ({model.n_layers} layers, d_model {model.d_model}), {n_tasks} tasks "
        f"incl. Null, k={k}, device {args.device}, threads {torch.get_num_threads()}"
    )

    batch, labels = prompts_for(model, args.n_prompts, k)
    fns = {
        "all layers": lambda: td_all(model, batch, labels),
        f"layer {layer}": lambda: td_one(model, batch, labels, layer),
    }
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    print(
        f"\nTD on {len(labels)} points ({args.n_prompts} prompts per task), median of "
        f"{args.repeats}:"
    )
    for n, v in med.items():
        print(f"  {n:12s} {v * 1000:8.1f} ms")
    ratio = med["all layers"] / med[f"layer {layer}"]
    print(f"  all / one = {ratio:.2f}x (goal <= 1.5x for {model.n_layers} layers)")

    print("\nTD at all layers vs prompts per task (median of 3; forward and kNN apart):")
    print(f"  {'prompts/task':>12s} {'points':>7s} {'total ms':>9s} {'forward':>8s} {'kNN':>8s}")
    for n in [int(x) for x in args.series.split(",")]:
        b, lab = prompts_for(model, n, k, seed=1)
        td_all(model, b, lab)
        runs = sorted((td_all(model, b, lab) for _ in range(3)), key=lambda r: r[1] + r[2])
        _, fwd, knn = runs[1]
        print(
            f"  {n:12d} {len(lab):7d} {(fwd + knn) * 1000:9.1f} {fwd * 1000:8.1f} {knn * 1000:8.1f}"
        )


if __name__ == "__main__":
    main()
