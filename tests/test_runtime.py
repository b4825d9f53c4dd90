"""The thread policy (tvlens.runtime): ``auto`` (the cores no other process uses, re-read in
training loops) unless told otherwise, in a fresh process as a user gets it (OpenMP reads its
environment once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tvlens import runtime
from tvlens.cli import app
from tvlens.errors import TVLensError
from tvlens.runtime import ThreadGovernor, measure_other_cores, parse_threads, threads_for

ROOT = Path(__file__).resolve().parents[1]

# What a user's process reports: the wait policy torch's OpenMP saw, and torch's threads
# after tvlens's training engine configured them.
PROBE = """
import json, os, sys
import tvlens
import torch
from tvlens.runtime import configure_threads
configure_threads()
print(json.dumps({"wait": os.environ.get("OMP_WAIT_POLICY"), "threads": torch.get_num_threads()}))
"""


def _probe(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "TVLENS_THREADS")}  # fmt: skip
    env = {**base, "PYTHONPATH": str(ROOT), **env}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_policy_is_auto_with_openmps_own_waiting():
    import torch

    got = _probe()
    assert got["wait"] is None and 1 <= got["threads"] <= torch.get_num_threads() + 64


def test_threads_for_counts_the_cores_left():
    assert threads_for(0.0, 2, 2) == 2
    assert threads_for(0.4, 2, 2) == 2  # a core at least half free counts
    assert threads_for(0.6, 2, 2) == 1
    assert threads_for(1.0, 2, 2) == 1
    assert threads_for(5.0, 2, 2) == 1  # never below one
    assert threads_for(0.0, 16, 8) == 8  # never above torch's default


def test_governor_follows_a_scripted_load(monkeypatch):
    """Busy CPU-seconds of the process's cores as /proc/stat would give them, on a fake
    clock: one other core busy -> one thread, then free again -> every core."""
    import torch

    monkeypatch.setattr(runtime, "_policy", runtime.AUTO)
    monkeypatch.setattr(runtime, "_max_threads", 2)
    monkeypatch.setattr(runtime, "_cores", lambda: [0, 1])
    before = torch.get_num_threads()
    now, busy = [0.0], [0.0]
    gov = ThreadGovernor(interval_s=2.0, clock=lambda: now[0], reader=lambda cores: busy[0])
    try:
        assert gov.active
        now[0], busy[0] = 1.0, 1.0
        assert gov.step() is None  # before the interval: nothing read
        now[0], busy[0] = 2.0, 2.0  # 2 CPU-seconds in 2 s, ~none of them ours: 1 core busy
        assert gov.step() == 1 and torch.get_num_threads() == 1
        assert gov.other_cores == pytest.approx(1.0, abs=0.1)
        now[0] = 4.0  # nothing else ran
        assert gov.step() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_governor_is_inactive_under_a_fixed_policy(monkeypatch):
    monkeypatch.setattr(runtime, "_policy", 3)
    assert not ThreadGovernor().active and ThreadGovernor().step(force=True) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat")
def test_a_busy_process_is_measured():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.5)
        assert measure_other_cores(0.5) >= 0.6
    finally:
        busy.kill()
        busy.wait()


def test_training_and_loading_apply_the_policy(tmp_path):
    """What the library does on its own, each in a fresh process: training (the engine) and
    loading a model (TVModel) apply the policy (here TVLENS_THREADS=1); the user's own
    choice after that is kept."""
    run = str(tmp_path / "run")
    train = f"""
from tvlens.training import train_synthetic
train_synthetic({run!r}, preset="tiny", steps=2, n_checkpoints=1, progress=False, device="cpu")
"""
    load = f"""
from tvlens.models import load_model
load_model({run!r}, device="cpu")
print(torch.get_num_threads())
torch.set_num_threads(2)  # the user's own choice after the first call is kept
load_model({run!r}, device="cpu")
"""
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "TVLENS_THREADS")}  # fmt: skip
    # a fixed policy, so that the numbers do not depend on the machine's load
    env = {**base, "PYTHONPATH": str(ROOT), "TVLENS_THREADS": "1"}
    for code, expected in ((train, ["1"]), (load, ["1", "2"])):
        code = f"import torch\n{code}\nprint(torch.get_num_threads())"
        out = subprocess.run([sys.executable, "-c", code], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert out.stdout.split() == expected


def test_tvlens_threads_env():
    assert _probe(TVLENS_THREADS="2") == {"wait": "PASSIVE", "threads": 2}
    # "torch": torch's own defaults, OpenMP's environment untouched.
    torch_default = _probe(TVLENS_THREADS="torch")
    assert torch_default["wait"] is None and torch_default["threads"] >= 1


def test_users_openmp_settings_are_kept():
    assert _probe(OMP_NUM_THREADS="2", OMP_WAIT_POLICY="ACTIVE") == {
        "wait": "ACTIVE",
        "threads": 2,
    }


def test_parse_threads():
    assert parse_threads("torch") is None and parse_threads(None) is None
    assert parse_threads("3") == 3 and parse_threads(2) == 2 and parse_threads("AUTO") == "auto"
    for bad in ("0", "-1", "many"):
        with pytest.raises(TVLensError, match="threads must be a positive number, 'auto'"):
            parse_threads(bad)


def test_cli_threads_option():
    runner = CliRunner()
    bad = runner.invoke(app, ["info", "--model", "smollm2-135m", "--threads", "zero"])
    assert bad.exit_code == 2 and "threads must be a positive number" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    assert "--threads" in runner.invoke(app, ["demo", "--help"]).output
