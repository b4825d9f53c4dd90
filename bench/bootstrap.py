"""Benchmark: the hierarchical bootstrap's time for 10,000 resamples on realistic shapes.

    python bench/bootstrap.py [--resamples 10000] [--repeats 5] [--threads 1]

Synthetic 0/1 per-query records (per-task accuracy drawn between 0.2 and 0.9, a trained
method with 3 seeds against a method without seeds) in the shapes of the comparisons: the ATV
comparison (17 tasks x 100 queries x 3 seeds), the second version's (12 x 16 x 3), and a
harness table with ragged tasks (30 tasks of 20..100 queries, no seeds). Prints, per shape,
the median over ``--repeats`` runs (after a warm-up) of: building the records table, the
paired bootstrap ``atv - icl`` over tasks > queries > seeds, and the query-only bootstrap for
comparison, with the widths of their 95% intervals. Goal: under 1 s for the first shape.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from tvlens.evaluation.stats import as_frame, hierarchical_bootstrap

SHAPES = {
    "atv v3 (17 tasks x 100 queries x 3 seeds)": (17, [100] * 17, (42, 100, 10)),
    "atv v2 (12 tasks x 16 queries x 3 seeds)": (12, [16] * 12, (42, 100, 10)),
    "harness (30 ragged tasks x 20..100 queries)": (30, list(range(20, 101, 80 // 29)), (None,)),
}


def records(n_tasks: int, n_queries: list[int], seeds: tuple, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tasks):
        p = rng.uniform(0.2, 0.9)
        for q in range(n_queries[t % len(n_queries)]):
            rows.append((f"t{t}", q, None, "icl", float(rng.random() < p)))
            for s in seeds:
                rows.append((f"t{t}", q, s, "atv", float(rng.random() < p + 0.03)))
    return rows


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch/numpy threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.resamples:,} resamples, median of {args.repeats} runs")
    for name, (n_tasks, n_queries, seeds) in SHAPES.items():
        rows = records(n_tasks, n_queries, seeds)
        t_frame, frame = timed(lambda rows=rows: as_frame(rows), args.repeats)

        def boot(levels, frame=frame):
            return hierarchical_bootstrap(frame, "atv", "icl", levels=levels,
                                          n_resamples=args.resamples)  # fmt: skip

        t_full, full = timed(lambda: boot(("task", "query", "seed")), args.repeats)
        t_query, query = timed(lambda: boot(("query",)), args.repeats)
        w_full, w_query = np.diff(full.interval())[0], np.diff(query.interval())[0]
        print(f"{name}: {len(rows):,} records")
        print(f"  records table           {t_frame:7.3f} s")
        print(f"  tasks > queries > seeds {t_full:7.3f} s   95% width {w_full:.3f}")
        print(f"  queries only            {t_query:7.3f} s   95% width {w_query:.3f}")


if __name__ == "__main__":
    main()
