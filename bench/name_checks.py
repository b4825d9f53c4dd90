"""Benchmark: how long a bad model or suite name takes to be refused, in a fresh interpreter,
next to ``python -c "import tvlens"`` (issues 29 and 33: under 2 s, offline, with a
suggestion); and the same for the runners (``run_task_vectors``, ``run_patching``,
``run_probe``, ``run_eval``, ``train_synthetic``, imported from their packages) given a bad
model path, a bad suite path, or a user's folder (``mine``) as ``out``, which must be left
byte-identical.

    python bench/name_checks.py [--repeats 3]

Each case runs in a new ``python`` process (so torch, TransformerLens and the hub client start
cold, as for a user) from a temporary folder holding ``runs/tiny``; ``HF_HUB_OFFLINE`` is
unset and no hub access is allowed (``TVLENS_ALLOW_HUB`` unset), as on a fresh install.
Prints the median wall time per case, the first line of its error, and whether torch was
imported; then the CLI's ``tvlens info --model runs/tny``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "import tvlens": "import tvlens",
    "load_model('runs/tny')": "from tvlens.models import load_model; load_model('runs/tny')",
    "load_model('smolm2-135m')": "from tvlens.models import load_model; load_model('smolm2-135m')",
    "load_model('/does/not/exist')": (
        "from tvlens.models import load_model; load_model('/does/not/exist')"
    ),
    "load_model('nobody/no-model')": (
        "from tvlens.models import load_model; load_model('nobody/no-model')"
    ),
    "get_suite('runs/tny.json')": "from tvlens.tasks import get_suite; get_suite('runs/tny.json')",
    "get_suite('latnt')": "from tvlens.tasks import get_suite; get_suite('latnt')",
}

# The runners (issue 29): a bad model path, a bad suite path, a user's folder as out. The
# folder ``mine`` holds a user's results.json, td.json, patching.json and notes.txt.
RUNNERS = {
    "run_task_vectors": ("tvlens.injection", "run_task_vectors", "model, out, suite"),
    "run_patching": ("tvlens.patching", "run_patching", "model, out, suite"),
    "run_probe": ("tvlens.probing", "run_probe", "model, out, suite"),
    "run_eval": ("tvlens.evaluation", "run_eval", "model, out, suite"),
    "train_synthetic": ("tvlens.training", "train_synthetic", "out"),
}
BAD = {  # (model, suite, out): one bad input each; runs/tiny is a folder, latent a suite
    "model": ("'/does/not/exist'", "'latent'", "'new-out'"),
    "suite": ("'runs/tiny'", "'runs/nosuite.json'", "'new-out'"),
    "out": ("'runs/tiny'", "'latent'", "'mine'"),
}
for _label, (_module, _fn, _args) in RUNNERS.items():
    for _what, (_model, _suite, _out) in BAD.items():
        if _what not in _args:
            continue
        if _fn == "run_eval" and _what == "out":
            _out = "'mine/results.json'"  # eval writes one file: the user's
        _call = f"{_fn}({_out})" if _args == "out" else f"{_fn}({_model}, {_out}, {_suite})"
        CASES[f"{_label}: bad {_what}"] = f"from {_module} import {_fn}; {_call}"


def run(code: str, cwd: str, env: dict) -> tuple[float, str]:
    wrapped = (
        "import sys\ntry:\n"
        + "".join(f"    {line}\n" for line in code.split("; "))
        + "except Exception as e:\n    print(f'{type(e).__name__}: {e}')\n"
        + "print('torch imported:', 'torch' in sys.modules)\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", wrapped], cwd=cwd, env=env, capture_output=True, text=True
    )
    return time.perf_counter() - t0, (out.stdout + out.stderr).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TVLENS_ALLOW_HUB")}
    env.pop("TRANSFORMERS_OFFLINE", None)
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "runs" / "tiny").mkdir(parents=True)
        mine = Path(tmp) / "mine"  # a user's folder
        mine.mkdir()
        for name in ("results.json", "td.json", "patching.json", "notes.txt"):
            (mine / name).write_text('{"mine": true}\n')
        env["HF_HUB_CACHE"] = str(Path(tmp) / "hf-cache")  # an empty cache: nothing local
        print(f"{'case':32s} {'median s':>8s}  first line of the output")
        before = {p.name: p.read_bytes() for p in mine.iterdir()}
        for label, code in CASES.items():
            times, text = [], ""
            for _ in range(args.repeats):
                s, text = run(code, tmp, env)
                times.append(s)
            print(f"{label:32s} {statistics.median(times):8.2f}  {text.splitlines()[0][:110]}")
            print(f"{'':32s} {'':8s}  {text.splitlines()[-1]}")
        after = {p.name: p.read_bytes() for p in mine.iterdir()}
        print("the user's folder unchanged:", before == after)
        cli = [sys.executable, "-m", "tvlens.cli", "info", "--model", "runs/tny"]
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = subprocess.run(cli, cwd=tmp, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
        line = (out.stdout + out.stderr).strip().splitlines()[0][:110]
        print(f"{'tvlens info --model runs/tny':32s} {statistics.median(times):8.2f}  {line}")


if __name__ == "__main__":
    main()
