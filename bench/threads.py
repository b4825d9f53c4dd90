"""Benchmark: training time under load, for torch's default threads and tvlens's policy.

    python bench/threads.py [--steps 300] [--loads 0 1] [--repeats 1] [--preset tiny]
    python bench/threads.py --preset default --steps 200   # the demo's training

Trains the ``tiny`` preset (or ``--preset``; ``default`` is the demo's model) for
``--steps`` steps in a fresh process for each thread policy, with
0, 1, ... competing CPU-bound processes (``while True: pass``), and prints the training time,
the load average when it started, and the ratio loaded / idle of each policy, all measured in
this run. Each training runs in its own process because OpenMP reads its settings once, when
torch starts its thread pool.

Policies (``TVLENS_THREADS`` in the child's environment, :mod:`tvlens.runtime`):

* ``torch``: torch's defaults (one thread per core, OpenMP's spin-waiting), what tvlens did
  before it set threads;
* ``tvlens``: tvlens's default (``auto``, :mod:`tvlens.runtime`);
* ``1``, ``2``...: that many intra-op threads, with the passive OpenMP wait policy.

On a machine with as many cores as training threads, a competing process takes a core from
an OpenMP team that spin-waits for every thread at each operation: every op then waits for a
time slice of the scheduler, and run time multiplies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time, tempfile
from pathlib import Path
t0 = time.perf_counter()
from tvlens.training import train_synthetic
import torch
t1 = time.perf_counter()
out = Path(tempfile.mkdtemp()) / "run"
train_synthetic(out, preset=sys.argv[2], steps=int(sys.argv[1]), progress=False)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "train_s": t2 - t1, "threads": torch.get_num_threads()}))
"""

BUSY = "while True: pass"
EXTRA_ENV: dict[str, str] = {}


def run_child(policy: str, steps: int, timeout: float, preset: str = "tiny") -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TVLENS_THREADS": policy}
    # What the user's shell may have set would hide the policy under test.
    for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS"):
        env.pop(k, None)
    if policy == "tvlens":  # tvlens's default: nothing set
        env.pop("TVLENS_THREADS")
    env.update(EXTRA_ENV)  # --env, e.g. GOMP_SPINCOUNT=10000
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(steps), preset], env=env,
                              check=True, capture_output=True, text=True,
                              cwd=tempfile.gettempdir(), timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:  # counted as the timeout: a lower bound
        return {"train_s": timeout, "timed_out": True, "threads": None}
    except subprocess.CalledProcessError as e:
        sys.exit(f"policy {policy}: the training process failed:\n{e.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(policy: str, load: int, steps: int, timeout: float, preset: str = "tiny") -> dict:
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(load)]
    try:
        time.sleep(0.5 if load else 0)  # the busy processes are running before training starts
        loadavg = os.getloadavg()
        r = run_child(policy, steps, timeout, preset)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    return {"policy": policy, "load": load, "loadavg_1min": loadavg[0],
            "loadavg_1min_end": os.getloadavg()[0], **r}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--preset", default="tiny", help="Preset (`default`: the demo's model).")
    ap.add_argument("--loads", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--policies", nargs="+", default=["torch", "tvlens"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600, help="Seconds per run (then '>').")
    ap.add_argument("--json", type=Path, help="Also write the rows here.")
    ap.add_argument("--env", nargs="*", default=[], help="KEY=VALUE set in every child.")
    args = ap.parse_args()
    EXTRA_ENV.update(kv.split("=", 1) for kv in args.env)
    print(f"cores: {os.cpu_count()}  load average at start: {os.getloadavg()}  {args.preset} "
          f"preset, {args.steps} steps, median of {args.repeats}", flush=True)  # fmt: skip
    rows = []
    # Interleaved: policies and loads alternate, so a change in the machine's other load
    # falls on all of them alike.
    for _ in range(args.repeats):
        for load in args.loads:
            for policy in args.policies:
                row = measure(policy, load, args.steps, args.timeout, args.preset)
                rows.append(row)
                over = ">" if row.get("timed_out") else " "
                print(f"  policy {policy:>6}  competing {load}  threads {row['threads']}  "
                      f"train {over}{row['train_s']:6.1f} s  load avg (1 min) "
                      f"{row['loadavg_1min']:.2f} -> {row['loadavg_1min_end']:.2f}",
                      flush=True)  # fmt: skip
    print(f"{'policy':>8} {'threads':>7} " + " ".join(f"{f'load {n} (s)':>11}" for n in args.loads)
          + " " + " ".join(f"{f'{n}/idle':>8}" for n in args.loads if n))  # fmt: skip
    for policy in args.policies:
        mine = [r for r in rows if r["policy"] == policy]
        med = {n: statistics.median(r["train_s"] for r in mine if r["load"] == n)
               for n in args.loads}  # fmt: skip
        # A median at a timeout is a lower bound: shown as "> t", its ratios as "?".
        capped = {n: any(r.get("timed_out") for r in mine if r["load"] == n) for n in args.loads}
        threads = next((r["threads"] for r in mine if r["threads"]), "?")
        idle = med.get(0)
        cells = " ".join(f"{('>' if capped[n] else '') + f'{med[n]:.1f}':>11}" for n in args.loads)
        ratios = " ".join(
            f"{'?' if capped[n] or capped.get(0) else f'{med[n] / idle:.2f}':>8}"
            for n in args.loads if n and idle
        )  # fmt: skip
        print(f"{policy:>8} {threads!s:>7} {cells} {ratios}")
    print(f"load average at end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
