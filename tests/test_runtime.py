"""The thread policy (tvlens.runtime): one intra-op thread and passive OpenMP waiting unless
told otherwise, in a fresh process as a user gets it (OpenMP reads its environment once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tvlens.cli import app
from tvlens.errors import TVLensError
from tvlens.runtime import parse_threads

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


def test_default_policy_is_one_passive_thread():
    assert _probe() == {"wait": "PASSIVE", "threads": 1}


def test_training_and_loading_apply_the_policy(tmp_path):
    """What the library does on its own, each in a fresh process: training (the engine) and
    loading a model (TVModel) set one thread; the user's own choice after that is kept."""
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
    for code, expected in ((train, ["1"]), (load, ["1", "2"])):
        code = f"import torch\n{code}\nprint(torch.get_num_threads())"
        out = subprocess.run([sys.executable, "-c", code], env={**base, "PYTHONPATH": str(ROOT)},
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
    assert parse_threads("3") == 3 and parse_threads(2) == 2
    for bad in ("0", "-1", "many"):
        with pytest.raises(TVLensError, match="threads must be a positive number or 'torch'"):
            parse_threads(bad)


def test_cli_threads_option():
    runner = CliRunner()
    bad = runner.invoke(app, ["info", "--model", "smollm2-135m", "--threads", "zero"])
    assert bad.exit_code == 2 and "threads must be a positive number" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    assert "--threads" in runner.invoke(app, ["demo", "--help"]).output
