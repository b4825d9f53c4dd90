"""Every Python block of README.md and docs/guides/*.md runs: in order, one namespace per file,
in a temporary folder that holds the `tiny` run the examples load (``runs/tiny``). A block
preceded by ``<!-- test: slow -->`` or ``<!-- test: smollm2 -->`` runs only under that marker
(with the file's other blocks). A warning is an error: an example that prints a deprecation
or any other warning teaches the reader to ignore them."""

import re
import shutil
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs" / "guides").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- test: (\w+) -->\n)?```python\n(.*?)```", re.S)
MARKERS = {"slow", "smollm2"}


def python_blocks(path: Path) -> list[tuple[str | None, str]]:
    """(marker or None, code) of each fenced Python block, in order."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(path.read_text(encoding="utf-8"))]


def _cases():
    for path in FILES:
        blocks = python_blocks(path)
        name = str(path.relative_to(ROOT))
        if any(marker is None for marker, _ in blocks):
            yield pytest.param(path, None, id=name)
        for marker in sorted({m for m, _ in blocks if m}):
            yield pytest.param(
                path, marker, id=f"{name}-{marker}", marks=getattr(pytest.mark, marker)
            )


def test_markers_are_known():
    """A misspelt marker would leave its block untested."""
    found = {m for path in FILES for m, _ in python_blocks(path) if m}
    assert found <= MARKERS, found - MARKERS
    assert sum(len(python_blocks(p)) for p in FILES) >= 12  # the pattern still finds the blocks


@pytest.fixture(scope="session")
def docs_run(tmp_path_factory) -> Path:
    """The `tiny` preset trained in full once, as `train_synthetic("runs/tiny", preset="tiny")`
    in the README leaves it (the examples then reuse it with ``resume=True``)."""
    from tvlens.training import train_synthetic

    out = tmp_path_factory.mktemp("docs") / "tiny"
    train_synthetic(out, preset="tiny", device="cpu", progress=False)
    return out


@pytest.mark.parametrize("path, marker", list(_cases()))
def test_docs_examples_run(path, marker, docs_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TVLENS_NO_PNG", "1")  # the PNG path is tested elsewhere; HTML is enough
    shutil.copytree(docs_run, tmp_path / "runs" / "tiny")
    namespace: dict = {"__name__": "__docs__"}
    for i, (block_marker, code) in enumerate(python_blocks(path)):
        if block_marker not in (None, marker):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                # Except deprecations one library raises about another (peft reading a
                # transformers attribute that transformers renamed): not the reader's to fix.
                warnings.filterwarnings(
                    "ignore", category=FutureWarning, module=r"(peft|transformers|accelerate)\."
                )
                exec(compile(code, f"{path.name}, block {i + 1}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{path.name}, Python block {i + 1} failed: {e!r}") from e
