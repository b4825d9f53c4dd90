"""Benchmark: ATV's cost against LoRA, zero-shot and 16-shot ICL, in one run on the same data.

    python bench/atv.py [--target smollm2-135m] [--data DIR]
                        [--device cpu] [--threads 2] [--steps 8] [--batch 8] [--repeats 3]

* Training throughput (examples / s, forward + backward + AdamW step, the engine's step
  without its files) of ATV at LoRA's parameter budget (frozen generator, low-rank expansion,
  ``atv_lora_budget`` of the comparison) against LoRA on q, v (peft, plain HF model), on the
  same batches. Goal: ATV >= 0.7x LoRA.
* Inference latency per query (first-token scoring of the same test queries, batched) of ATV
  against zero-shot (goal <= 1.3x) and against 16-shot ICL (goal <= 0.5x); 16-shot falls back
  to the largest k that fits the target's context (said in the output).

Medians of ``--repeats`` interleaved runs after a warm-up. Without ``--target`` the synthetic
setting's tiny target is trained into a temporary folder (about a minute) and the compare's
``tiny`` tasks are used; with ``--target`` the ``cpu`` preset's function-vector tasks, read
from ``--data`` (default: the files shipped in ``tvlens/tasks/data/function_vectors``). Prints
the device (CPU model and threads, or the GPU's name) and writes ``--out`` JSON if given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tvlens.compare.fitting import answer_ce, hf_logits, lm_batch
from tvlens.compare.methods import ICL
from tvlens.compare.run import compare_context, get_compare_preset
from tvlens.compare.tuned import ATVMethod, PeftMethod
from tvlens.compare.workers import device_name
from tvlens.evaluation.icl import evaluate_prompts
from tvlens.models import load_model
from tvlens.tasks.registry import FV_DATA_DIR


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default=None, help="target model (default: the tiny target)")
    ap.add_argument(
        "--data",
        default=str(FV_DATA_DIR),
        help="function-vector datasets folder (fv/ tasks; default: the shipped files)",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=8, help="timed training steps per method")
    ap.add_argument("--batch", type=int, default=8, help="training batch size")
    ap.add_argument("--queries", type=int, default=64, help="test queries timed at inference")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp = Path(tempfile.mkdtemp())
    if args.target is None:
        from tvlens.atv.train import train_synthetic_target

        run = train_synthetic_target(tmp / "target", device=args.device, progress=False)
        target_name, cfg = str(run), get_compare_preset("tiny")
    else:
        target_name = args.target
        cfg = get_compare_preset("cpu")
    cfg = cfg.with_overrides(batch_size=args.batch, eval_batch_size=args.queries,
                             data_dir=args.data)  # fmt: skip
    target = load_model(target_name, device=args.device)
    ctx = compare_context(cfg, target, tmp, progress=False)
    data = ctx.data
    train = data.in_domain.train
    batches = [train[i : i + args.batch] for i in range(0, len(train), args.batch)]
    batches = [b for b in batches if len(b) == args.batch][: args.steps + 2]
    queries = (data.in_domain.test + data.unseen.test)[: args.queries]

    # ---------------------------------------------------------------- training throughput
    lora = PeftMethod(ctx, "lora_qv", 0, kind="lora_qv")
    lora.model = lora.build().train()
    atv_m = ATVMethod.for_cell(ctx, "atv_lora_budget", 0, kind="lora_budget")
    atv = atv_m.atv = atv_m.build()
    lora_batches = [lm_batch(b, target).to(args.device) for b in batches]
    atv_batches = [atv.batch(b).to(args.device) for b in batches]

    def lora_step(b):
        return answer_ce(hf_logits(lora.model, b.tokens, b.attention_mask), b.labels)

    def atv_step(b):
        return atv.loss(b)

    runs = {
        "lora_qv": (lora.model, lora_step, lora_batches),
        "atv_lora_budget": (atv.generator, atv_step, atv_batches),
    }
    opts = {
        k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
        for k, (m, _, _) in runs.items()
    }

    def train_steps(name: str, bs: list) -> None:
        _, loss_fn, _ = runs[name]
        for b in bs:
            loss = loss_fn(b)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()

    for name in runs:  # warm-up
        train_steps(name, runs[name][2][:2])
    per_step = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved
        for name in runs:
            bs = runs[name][2][2:]
            t0 = time.perf_counter()
            train_steps(name, bs)
            per_step[name].append((time.perf_counter() - t0) / len(bs))
    step_s = {k: statistics.median(v) for k, v in per_step.items()}
    throughput = {k: args.batch / v for k, v in step_s.items()}
    params = {"lora_qv": lora.trainable_parameters(), "atv_lora_budget": atv.trainable_parameters()}
    del lora.model

    # ---------------------------------------------------------------- inference latency
    atv.generator.eval()
    icl_k = None
    for k in (16, 12, 8, 5, 3):
        icl = ICL.for_cell(ctx, f"icl_{k}", 0, k=k)
        if icl.skip_reason is None:
            icl_k = k
            break

    def run_zero():
        evaluate_prompts(target, queries, batch_size=len(queries))

    def run_atv():
        atv.correctness(queries, batch_size=len(queries))

    def run_icl():
        icl.correctness(queries)

    fns = {"zero_shot": run_zero, "atv": run_atv}
    if icl_k is not None:
        icl.batch_size = len(queries)
        fns[f"icl_{icl_k}"] = run_icl
    for fn in fns.values():
        fn()
    lat = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            lat[k].append(median_time(fn, 1) / len(queries))
    latency = {k: statistics.median(v) for k, v in lat.items()}

    res = {
        "device": device_name(args.device),
        "gpu_lent": torch.cuda.is_available(),
        "target": target_name,
        "batch": args.batch,
        "timed_steps": len(batches) - 2,
        "queries": len(queries),
        "trainable_params": params,
        "atv_rank": atv_m.rank,
        "train_examples_per_s": throughput,
        "atv_over_lora_throughput": throughput["atv_lora_budget"] / throughput["lora_qv"],
        "latency_s_per_query": latency,
        "atv_over_zero_shot_latency": latency["atv"] / latency["zero_shot"],
        "icl_k": icl_k,
        "atv_over_icl_latency": latency["atv"] / latency[f"icl_{icl_k}"] if icl_k else None,
    }
    print(f"device: {res['device']}  target: {target_name}")
    print(f"trainable parameters: LoRA q,v {params['lora_qv']:,}  "
          f"ATV (frozen generator, rank {atv_m.rank}) {params['atv_lora_budget']:,}")  # fmt: skip
    print(f"training throughput (examples/s, batch {args.batch}): "
          f"LoRA {throughput['lora_qv']:.2f}  ATV {throughput['atv_lora_budget']:.2f}  "
          f"ratio ATV/LoRA {res['atv_over_lora_throughput']:.2f}x (goal >= 0.7x)")  # fmt: skip
    print(
        f"inference latency per query (ms, batch {len(queries)}): "
        + "  ".join(f"{k} {1000 * v:.2f}" for k, v in latency.items())
    )
    print(f"ATV / zero-shot {res['atv_over_zero_shot_latency']:.2f}x (goal <= 1.3x)")
    if icl_k:
        note = "" if icl_k == 16 else f" (16-shot does not fit the context: {icl_k}-shot)"
        print(f"ATV / {icl_k}-shot ICL {res['atv_over_icl_latency']:.2f}x (goal <= 0.5x){note}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
