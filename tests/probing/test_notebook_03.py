"""notebooks/03_task_encoding.ipynb executed end to end on the tiny fast path."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


def test_task_encoding_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TVLENS_NOTEBOOK_PRESET", "tiny")
    monkeypatch.setenv("TVLENS_NOTEBOOK_RUN_DIR", str(tmp_path))
    nb = nbformat.read(ROOT / "notebooks" / "03_task_encoding.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, errors[0] if errors else None
    assert (tmp_path / "finetune" / "metrics.json").is_file()
    assert any((tmp_path / "tiny-regression" / "checkpoints").iterdir())
