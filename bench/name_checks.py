"""Benchmark: how long a bad model or suite name takes to be refused, in a fresh interpreter,
next to ``python -c "import tvlens"`` (issues 29 and 33: under 2 s, offline, with a
suggestion).

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
        env["HF_HUB_CACHE"] = str(Path(tmp) / "hf-cache")  # an empty cache: nothing local
        print(f"{'case':32s} {'median s':>8s}  first line of the output")
        for label, code in CASES.items():
            times, text = [], ""
            for _ in range(args.repeats):
                s, text = run(code, tmp, env)
                times.append(s)
            print(f"{label:32s} {statistics.median(times):8.2f}  {text.splitlines()[0][:110]}")
            print(f"{'':32s} {'':8s}  {text.splitlines()[-1]}")
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
