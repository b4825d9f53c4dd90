"""Benchmark: what each extraction method costs, as ratios to one ICL forward, same run.

    python bench/methods.py [--model smollm2-135m] [--suite words] [--tasks 2] [--methods all]
    python bench/methods.py --model runs/tiny --suite runs/tiny --tasks 2 --n-examples 40

Runs the vector harness (:func:`tvlens.injection.evaluate_task_vectors`) on the first
``--tasks`` tasks of ``--suite`` and prints, per method:

* ``extract / ICL fwd``: seconds to extract the method's vector for one task (demonstration
  forwards, PCA, calibration or training: everything ``extract`` does) divided by the seconds
  of one ICL forward pass per query (the k-shot prompt, no generation), both measured in this
  run on the same model and tasks: how many ICL queries the extraction costs;
* ``extract forwards``: forward passes (and prompts through them) during extraction;
* ``added latency / ICL fwd``: the seconds a steered zero-shot forward adds per query over the
  bare zero-shot forward, divided by the same ICL forward: a method's inference overhead
  (ICL's own overhead is the ``icl`` row, the demonstrations' tokens);
* ``zero-shot fwd / ICL fwd``, the saving every vector method starts from.

Each ratio is the mean over the tasks of the per-task ratio (the latencies are the fastest of
the harness's repeats, alternating steered and bare forwards). The model runs with tvlens's
thread policy unless ``--threads`` is given; the thread count is printed.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from tvlens.experiments.pretrained import named_suites
from tvlens.injection import evaluate_task_vectors
from tvlens.models import load_model
from tvlens.runtime import configure_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--suite", default="words")
    ap.add_argument("--tasks", type=int, default=2, help="The first N tasks of the suite.")
    ap.add_argument("--n-examples", type=int, default=60, help="Pairs per task, at most.")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--n-extract", type=int, default=16)
    ap.add_argument("--threads", default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    configure_threads(args.threads)
    model = load_model(args.model, device=args.device)
    suite = next(iter(named_suites(args.suite, n_examples=args.n_examples).values()))
    tasks = [suite[n] for n in suite.names[: args.tasks]]
    methods = tuple(args.methods.split(","))
    names = ", ".join(t.name for t in tasks)
    print(f"model {args.model}  suite {args.suite} ({names})  k {args.k}  "
          f"threads {torch.get_num_threads()}  device {args.device}", flush=True)  # fmt: skip
    rep = evaluate_task_vectors(
        model, tasks, methods=methods, k=args.k, n_extract=args.n_extract,
        answer_token="first", progress=False,
    )  # fmt: skip
    ts = list(rep.tasks.values())
    icl_fwd = [t.icl_latency_s for t in ts]
    zs = statistics.mean(t.zero_shot_latency_s / t.icl_latency_s for t in ts)
    print(f"ICL forward per query: {1000 * statistics.mean(icl_fwd):.1f} ms;  zero-shot "
          f"forward / ICL forward: {zs:.2f}")  # fmt: skip
    print(f"{'method':>14} {'extract (s)':>12} {'extract / ICL fwd':>18} "
          f"{'forwards (prompts)':>19} {'added latency / ICL fwd':>24}")  # fmt: skip
    icl_added = statistics.mean((t.icl_latency_s - t.zero_shot_latency_s) / t.icl_latency_s
                                for t in ts)  # fmt: skip
    print(f"{'icl':>14} {0.0:>12.2f} {0.0:>18.1f} {'0 (0)':>19} {icl_added:>24.2f}")
    for m in rep.config["methods"]:
        rs = [t.methods[m] for t in ts]
        ext = statistics.mean(r.extract_s for r in rs)
        ratio = statistics.mean(r.extract_s / t.icl_latency_s for r, t in zip(rs, ts, strict=True))
        fw = f"{statistics.mean(r.extract_forwards for r in rs):.0f} "
        fw += f"({statistics.mean(r.extract_prompts for r in rs):.0f})"
        pairs = list(zip(rs, ts, strict=True))
        added = statistics.mean(r.added_latency_s / t.icl_latency_s for r, t in pairs)
        print(f"{m:>14} {ext:>12.2f} {ratio:>18.1f} {fw:>19} {added:>24.2f}", flush=True)


if __name__ == "__main__":
    main()
