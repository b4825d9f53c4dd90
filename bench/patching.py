"""Benchmark: tvlens.patching against TransformerLens's own ``patching`` module, same inputs,
same metric, measured in the same run.

    python bench/patching.py [--model runs/default] [--suite NAME] [--device cpu] [--n-prompts 32]
    python bench/patching.py --model smollm2-135m --suite words --n-prompts 9 --threads 2 \
        --cases a,b,d

Prompts: k-shot prompts of ``--suite`` or the model's training suite (clean), all of one
token length (TransformerLens's patching functions take no attention mask) and the same prompts with
shuffled demonstration labels (corrupted); metric: probability of the clean answer at the last
position. TransformerLens's timings include the clean ``run_with_cache`` its functions need;
tvlens's include its clean and corrupted runs. Prints the median of ``--repeats`` runs (after a
warm-up; the runs of a comparison interleaved) of:

a. last-position head sweep: ``patch(heads, "last")`` vs ``generic_activation_patch`` over
   (layer, last pos, head) with TransformerLens's ``layer_pos_head_vector_patch_setter`` (the
   narrowest TransformerLens equivalent: one forward pass per head), and (a') vs
   ``get_act_patch_attn_head_out_by_pos`` read at the last position (TransformerLens's own
   function for position-resolved head patching: one forward pass per head and position);
b. all-position head sweep: ``patch(heads, "all")`` vs ``get_act_patch_attn_head_out_all_pos``;
c. residual stream per layer x position: ``patch(resid, "each")`` vs ``get_act_patch_resid_pre``;
d. attribution vs exact patching per component: time ratio and Spearman correlation;
e. how (a) and (b) grow with layers x heads (random GPT-2 models, same prompts) and with
   prompt length (number of demonstrations).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's per-patch progress bars

import pandas as pd
import torch
from transformer_lens import patching as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction import bench_prompts, bench_suite, load, timed  # noqa: E402  (bench/ helpers)

from tvlens.models import build_hf_model, load_model, save_hf_model  # noqa: E402
from tvlens.patching import AnswerProb, patch, rank_correlation  # noqa: E402
from tvlens.tasks import tokenize_prompts  # noqa: E402


def make_pair(model, suite, k: int, n_prompts: int):
    prompts, shuffled = bench_prompts(model, suite, k, n_prompts, model.template())
    clean = tokenize_prompts(prompts, model, padding_side="left")
    corrupted = tokenize_prompts(shuffled, model, padding_side="left")
    return clean, corrupted


def tl_last_heads(model, clean, corrupted, metric):
    _, cache = model.bridge.run_with_cache(clean.tokens)
    T = clean.tokens.shape[1]
    idx = pd.DataFrame(
        [(layer, T - 1, h) for layer in range(model.n_layers) for h in range(model.n_heads)],
        columns=["layer", "pos", "head"],
    )
    out = tl.generic_activation_patch(
        model.bridge,
        corrupted.tokens,
        cache,
        metric,
        patch_setter=tl.layer_pos_head_vector_patch_setter,
        activation_name="z",
        index_df=idx,
    )
    return out.reshape(model.n_layers, model.n_heads)


def tl_fn(fn):
    def run(model, clean, corrupted, metric):
        _, cache = model.bridge.run_with_cache(clean.tokens)
        return fn(model.bridge, corrupted.tokens, cache, metric)

    return run


def compare(model, clean, corrupted, repeats, device, cases):
    """``[(label, ours seconds, TL seconds, max |diff|)]`` for ``(label, ours, theirs)`` cases."""
    metric = AnswerProb.from_batch(clean)
    rows = []
    for label, ours, theirs in cases:
        with torch.no_grad():
            got = timed(
                {
                    "ours": lambda ours=ours: ours(model, clean, corrupted, metric).values,
                    "tl": lambda theirs=theirs: theirs(model, clean, corrupted, metric),
                },
                repeats,
                device,
            )
        (t_o, v_o), (t_t, v_t) = got["ours"], got["tl"]
        rows.append((label, t_o, t_t, float((v_o - v_t.cpu()).abs().max())))
    return rows


def ours(component, positions):
    return lambda m, c, x, metric: patch(m, c, x, metric, component, positions)


def tl_by_pos_last(model, clean, corrupted, metric):
    """TransformerLens's own per-position head sweep, read at the last position."""
    return tl_fn(tl.get_act_patch_attn_head_out_by_pos)(model, clean, corrupted, metric)[:, -1]


CASES = [
    ("(a) heads, last position", ours("heads", "last"), tl_last_heads),
    ("(a') same vs TL's _by_pos[:, -1]", ours("heads", "last"), tl_by_pos_last),
    (
        "(b) heads, all positions",
        ours("heads", "all"),
        tl_fn(tl.get_act_patch_attn_head_out_all_pos),
    ),
    ("(c) resid_pre, layer x pos", ours("resid", "each"), tl_fn(tl.get_act_patch_resid_pre)),
]
GOALS = {"(a)": 10.0, "(b)": 1.5}


def print_rows(rows):
    for label, t_o, t_t, diff in rows:
        goal = GOALS.get(label[:3])
        g = f" (goal >= {goal:g}x: {'ok' if t_t / t_o >= goal else 'MISSED'})" if goal else ""
        print(
            f"  {label:<32} tvlens {t_o * 1e3:8.1f} ms   TransformerLens {t_t * 1e3:8.1f} ms   "
            f"speed-up {t_t / t_o:5.1f}x{g}   max|diff| {diff:.1e}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model or run folder (default: runs/default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--suite", default=None, help="suite name or folder (default: training suite)")
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=None, help="demonstrations (default: training k)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-scaling", action="store_true", help="skip (e)")
    ap.add_argument(
        "--cases",
        default="a,a',b,c,d,e",
        help="comma-separated subset of a,a',b,c,d,e (on a 30-layer model (a') and (c) run "
        "one forward pass per head x position / layer x position: minutes on a CPU)",
    )
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    model, where = load(args)
    device = model.device
    k = args.k if args.k is not None else int(model.spec.train_info.get("k", 5))
    suite = bench_suite(model, args.suite, where)
    clean, corrupted = make_pair(model, suite, k, args.n_prompts)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    threads = f", {torch.get_num_threads()} torch threads" if device.type == "cpu" else ""
    print(
        f"model {where}: {model.n_layers} layers x {model.n_heads} heads, d_model "
        f"{model.d_model}; device {dev}{threads}; {len(clean)} prompts x "
        f"{clean.tokens.shape[1]} tokens (k={k}); median of {args.repeats} after 1 warm-up"
    )
    cases = set(args.cases.split(","))
    chosen = [c for c in CASES if c[0][1:].split(")")[0] in cases]
    print_rows(compare(model, clean, corrupted, args.repeats, device, chosen))

    # (d) attribution vs exact.
    if "d" in cases:
        print("(d) attribution patching vs exact patching (same components)")
    metric = AnswerProb.from_batch(clean)
    d_cases = [("heads", "all"), ("resid", "each"), ("attn", "each"), ("mlp", "each")]
    for component, positions in d_cases if "d" in cases else []:
        got = timed(
            {
                m: lambda m=m, component=component, positions=positions: patch(
                    model, clean, corrupted, metric, component, positions, method=m
                )
                for m in ("exact", "attribution")
            },
            args.repeats,
            device,
        )
        (t_e, ex), (t_a, at) = got["exact"], got["attribution"]
        print(
            f"  {component:>5} {positions:<4}  exact {t_e * 1e3:7.1f} ms  attribution "
            f"{t_a * 1e3:7.1f} ms ({t_e / t_a:4.1f}x faster)  Spearman "
            f"{rank_correlation(ex, at):+.3f}"
        )

    if args.no_scaling or "e" not in cases:
        return
    # (e) growth with layers x heads and with prompt length.
    print("(e) growth: random GPT-2 models (d_model 128), same prompts")
    tok = model.tokenizer
    for n_layers, n_heads in ((2, 4), (4, 4), (8, 8)):
        hf = build_hf_model("gpt2", len(tok), seed=0, n_layers=n_layers, d_model=128,
                            n_heads=n_heads, n_ctx=model.spec.n_ctx)  # fmt: skip
        folder = save_hf_model(hf, tok, tempfile.mkdtemp())
        m = load_model(folder, device=args.device)
        print(f"  {n_layers} layers x {n_heads} heads:")
        print_rows(compare(m, clean, corrupted, args.repeats, device, [CASES[0], CASES[2]]))
    print("(e) growth with prompt length (this model)")
    for kk in (2, k, 2 * k):
        c2, x2 = make_pair(model, suite, kk, args.n_prompts)
        print(f"  k={kk}, {c2.tokens.shape[1]} tokens:")
        print_rows(compare(model, c2, x2, args.repeats, device, [CASES[0], CASES[2]]))


if __name__ == "__main__":
    main()
