"""Execute the committed notebooks in place, so that their saved outputs come from today's
code (``tvlens regenerate --notebooks``), and check what they show.

Each notebook runs in a fresh kernel, in a temporary folder, on the ``tiny`` preset (seconds)
with its runs under the relative ``runs/`` there, so no machine path reaches an output. Its
outputs are then checked (:func:`output_problems`): no warning on stderr (a missing
``ipywidgets`` shows as tqdm's "IProgress not found", a missing browser as "PNG not written"),
no absolute path, no plotly loaded from a CDN (GitHub and offline readers would see nothing).
A notebook with a problem is not written back. Needs the ``notebooks`` extra (``pip install
-e '.[notebooks]'``) and, for the PNG beside each figure, a browser (``bash install.sh
--png``).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

from tvlens.errors import TVLensError

NOTEBOOKS_DIR = Path("notebooks")
# An absolute path of a machine: a home, a temporary or a work folder, a virtualenv.
MACHINE_PATH = re.compile(r"(?<![\w.<])/(?:home|tmp|work|root|Users|private|var/folders)/")
# plotly.js loaded from the CDN (a <script src>, or require.js's path in `notebook_connected`);
# the bundled plotly.js itself mentions cdn.plot.ly in strings, which loads nothing
CDN = re.compile(
    r"""src=["']https://cdn\.plot\.ly|['"]plotly['"]\s*:\s*['"]https://cdn\.plot\.ly"""
)
CELL_TIMEOUT = 900


def output_problems(nb: dict) -> list[str]:
    """What a reader should not see in the executed notebook ``nb`` (one line each)."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            text = "".join(out.get("text", "")) + "".join(
                "".join(v) if isinstance(v, list) else str(v)
                for k, v in out.get("data", {}).items()
                if k.startswith("text/") or k.endswith("json")
            )
            if out.get("output_type") == "error":
                problems.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            if out.get("name") == "stderr" and "Warning" in text:
                problems.append(f"cell {i}: a warning: {text.strip()[:160]}")
            if MACHINE_PATH.search(text):
                problems.append(f"cell {i}: a machine path: {MACHINE_PATH.search(text)[0]}...")
            if CDN.search(text):
                problems.append(f"cell {i}: plotly.js from a CDN")
    return problems


def execute_notebooks(names: Sequence[str] | None = None, root: str | Path = ".") -> list[Path]:
    """Execute ``notebooks/{names}`` (default: all) in place; the notebooks written. A
    notebook whose outputs have a problem is left as it was and reported in one error."""
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as e:
        raise TVLensError(
            f"Executing notebooks needs the notebooks extra ({e.name} is missing): pip install "
            "-e '.[notebooks]'."
        ) from None
    folder = Path(root) / NOTEBOOKS_DIR
    paths = [folder / n for n in names] if names else sorted(folder.glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise TVLensError(f"No notebook {missing}; the notebooks are in {folder}.")
    env = {"TVLENS_NOTEBOOK_PRESET": "tiny", "TVLENS_NOTEBOOK_RUN_DIR": "runs"}
    written, failed = [], []
    with mock.patch.dict(os.environ, env):  # the kernel inherits the environment
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            with tempfile.TemporaryDirectory() as cwd:
                resources = {"metadata": {"path": cwd}}
                NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                               resources=resources).execute()  # fmt: skip
            problems = output_problems(nb)
            if problems:
                failed.append(f"{path.name}: " + "; ".join(problems[:3]))
                continue
            nbformat.write(nb, path)
            written.append(path)
    if failed:
        raise TVLensError("Not written back: " + " | ".join(failed))
    return written


if __name__ == "__main__":  # python -m tvlens.demo.notebooks [NAME.ipynb ...], from the root
    import sys

    for p in execute_notebooks(sys.argv[1:] or None):
        print(f"executed {p}")
