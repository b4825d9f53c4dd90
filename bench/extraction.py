"""Benchmark: extraction, head AIE and layer sweeps against their naive full-forward versions.

    python bench/extraction.py [--model runs/default] [--suite NAME] [--device cpu] [--n-prompts 64]
    python bench/extraction.py --model smollm2-135m --suite words --n-prompts 9 --repeats 1

On one batch of k-shot prompts (left padded), prints the median of ``--repeats`` timed runs
(after one warm-up run; the runs of each comparison interleaved) of:

a. ``residual_at_query`` at every layer, a bare forward pass and ``run_with_cache`` (no filter);
b. ``head_aie`` (last-token patching, all heads) and a loop of one full forward pass per head
   (the reference of tests/extraction/test_tv_function_vectors.py), with the max abs difference;
c. ``layer_sweep_logits`` and a loop of one full forward pass per layer with ``inject``, on
   the k-shot prompts (add) and on their zero-shot versions (replace).

``--suite`` (a suite name or folder) is required for a model tvlens did not train; prompts of
a real tokenizer differ in length, so they are kept to one token length (the most common one
over a larger sample), as the references take no padding into account.

The model defaults to ``runs/default`` at the repository root; without it, the ``tiny`` preset
is trained into a temporary folder first (about 10 s on CPU). torch keeps its default number of
CPU threads unless ``--threads`` is given.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tvlens.extraction import head_aie, mean_head_outputs, residual_at_query
from tvlens.injection import layer_sweep_logits
from tvlens.models import load_model
from tvlens.patching.reference import reference_head_aie, reference_layer_sweep
from tvlens.tasks import get_suite, sample_prompts, tokenize_prompts
from tvlens.tasks.prompts import shuffled_label_variants

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, tuple[float, object]]:
    """``{name: (median seconds, last result)}``: one warm-up run each, then ``repeats`` rounds
    running every function once in turn, so that a load change on a shared machine hits all
    of them alike."""
    out = {name: fn() for name, fn in fns.items()}
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            out[name] = fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), out[name]) for name in fns}


def load(args) -> tuple[object, str]:
    if args.model:
        return load_model(args.model, device=args.device), args.model
    default = ROOT / "runs" / "default"
    if default.exists():
        return load_model(default, device=args.device), str(default.relative_to(ROOT))
    from tvlens.training import train_synthetic

    out = Path(tempfile.mkdtemp()) / "tiny"
    print(f"{default} not found: training the tiny preset into {out} first.")
    run = train_synthetic(out, preset="tiny", device="cpu", progress=False)
    return load_model(run.run_dir, device=args.device), f"{out} (tiny preset, trained now)"


def bench_suite(model, suite_arg: str | None, where: str):
    """The suite named on the command line, else the one the model was trained on."""
    if suite_arg:
        return get_suite(suite_arg)
    suite = model.training_suite()
    if suite is None:
        raise SystemExit(f"{where} has no training suite on record: pass --suite (e.g. words).")
    return suite


def bench_prompts(model, suite, k: int, n_prompts: int, tmpl, seed: int = 0):
    """``n_prompts`` k-shot prompts spread over the suite's tasks, and their shuffled-label
    versions, every one of them the same number of tokens (no padding: the reference
    implementations compare without an attention mask). A word-level tokenizer gives that at
    once; a real one draws 8x as many candidates and keeps the most common length."""
    tasks = list(suite)

    def draw(n_total: int, s: int):
        per_task = [len(x) for x in np.array_split(np.arange(n_total), len(tasks))]
        ps = []
        for i, (task, n) in enumerate(zip(tasks, per_task, strict=True)):
            if n:
                ps += sample_prompts(task, k, n, seed=s + i, template=tmpl)
        return ps, shuffled_label_variants(ps, seed=s + 1)

    def n_tok(p) -> int:
        return int(tokenize_prompts([p], model).tokens.shape[1])

    prompts, corrupted = draw(n_prompts, seed)
    lengths = [(n_tok(a), n_tok(b)) for a, b in zip(prompts, corrupted, strict=True)]
    if len({x for pair in lengths for x in pair}) > 1:
        cand, cand_c = draw(8 * n_prompts, seed + 100)
        lengths = [(n_tok(a), n_tok(b)) for a, b in zip(cand, cand_c, strict=True)]
        same = [a for a, b in lengths if a == b]
        common = max(set(same), key=same.count)
        keep = [i for i, (a, b) in enumerate(lengths) if a == b == common][:n_prompts]
        prompts, corrupted = [cand[i] for i in keep], [cand_c[i] for i in keep]
    return prompts, corrupted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model or run folder (default: runs/default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--suite", default=None, help="suite name or folder (default: training suite)")
    ap.add_argument("--n-prompts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--k", type=int, default=None, help="demonstrations (default: training k)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's own default; on a CPU shared with other "
        "processes, 1 avoids OpenMP spin-wait slowdowns of 10-50x)",
    )
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    model, where = load(args)
    device = model.device
    suite = bench_suite(model, args.suite, where)
    k = args.k if args.k is not None else int(model.spec.train_info.get("k", 5))
    prompts, shuffled = bench_prompts(model, suite, k, args.n_prompts, model.template())
    batch = tokenize_prompts(prompts, model, padding_side="left")
    corrupted = tokenize_prompts(shuffled, model)
    zero_shot = [p.zero_shot() for p in prompts]

    print(
        f"model {where}: {model.spec.architecture}, {model.n_layers} layers x {model.n_heads} "
        f"heads, d_model={model.d_model}"
    )
    threads = torch.get_num_threads() if device.type == "cpu" else None
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(
        f"device {dev}"
        + (
            f" ({threads} torch threads, {'--threads' if args.threads else 'default'})"
            if threads
            else ""
        )
        + f"; {len(batch)} prompts, k={k}, {batch.tokens.shape[1]} tokens (left padded); "
        f"median of {args.repeats} after 1 warm-up"
    )
    rows: list[tuple[str, float, str]] = []

    # (a) residual at the query, at every layer.
    def forward():
        with torch.no_grad():
            return model(batch.tokens, attention_mask=batch.attention_mask)

    def cache_all():
        with torch.no_grad():
            return model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)

    got = timed(
        {"fwd": forward, "res": lambda: residual_at_query(model, batch), "cache": cache_all},
        args.repeats,
        device,
    )
    (t_fwd, _), (t_res, res), (t_cache, (_, cache)) = got["fwd"], got["res"], got["cache"]
    ref = torch.stack([cache[model.resid_hook(x)][:, -1] for x in range(model.n_layers)])
    diff = float((res - ref).abs().max())
    del cache
    rows += [
        ("(a) forward pass", t_fwd, ""),
        (
            "    residual_at_query, all layers",
            t_res,
            f"{t_res / t_fwd:.2f}x forward (goal <= 1.15); max|diff| vs cache {diff:.1e}",
        ),
        ("    run_with_cache, no filter", t_cache, f"{t_cache / t_fwd:.2f}x forward"),
    ]

    # (b) head AIE, all heads.
    means = mean_head_outputs(model, batch)
    got = timed(
        {
            "aie": lambda: head_aie(model, corrupted, means),
            "ref": lambda: reference_head_aie(model, corrupted, means),
        },
        args.repeats,
        device,
    )
    (t_aie, aie), (t_ref, aie_ref) = got["aie"], got["ref"]
    diff = aie_diff = float((aie - aie_ref).abs().max())
    n_heads = model.n_layers * model.n_heads
    rows += [
        (
            f"(b) head_aie, {n_heads} heads",
            t_aie,
            f"speed-up {t_ref / t_aie:.1f}x; max|diff| {diff:.1e} "
            f"({'ok' if diff <= 1e-5 else 'FAIL'} <= 1e-5)",
        ),
        (f"    one forward per head ({n_heads})", t_ref, ""),
    ]

    # (c) layer sweeps of the mean residual: added to the k-shot prompts (as function vectors
    # are swept), and written over zero-shot prompts (Hendel's task vectors).
    vecs = res.mean(1)
    layers = list(range(model.n_layers))
    zs = tokenize_prompts(zero_shot, model, padding_side="left")
    for label, ps, b, mode in (
        ("k-shot, add", prompts, batch, "add"),
        ("0-shot, replace", zero_shot, zs, "replace"),
    ):
        got = timed(
            {
                "sweep": lambda ps=ps, mode=mode: layer_sweep_logits(
                    model, ps, vecs, layers, mode=mode
                ),
                "ref": lambda b=b, mode=mode: reference_layer_sweep(model, b, vecs, layers, mode),
            },
            args.repeats,
            device,
        )
        (t_sw, sw), (t_swref, sw_ref) = got["sweep"], got["ref"]
        diff = float((sw - sw_ref).abs().max())
        rows += [
            (
                f"(c) layer_sweep_logits, {len(layers)} layers, {label}",
                t_sw,
                f"speed-up {t_swref / t_sw:.1f}x; max|diff| {diff:.1e}",
            ),
            (f"    one forward per layer ({len(layers)})", t_swref, ""),
        ]

    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'ms':>8}")
    for name, t, note in rows:
        print(f"{name:{width}}  {t * 1e3:8.2f}  {note}")
    if aie_diff > 1e-5:
        raise SystemExit(f"head_aie differs from the reference by {aie_diff:.1e} > 1e-5")


if __name__ == "__main__":
    main()
