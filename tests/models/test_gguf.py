"""Any GGUF file loads with one argument: converted once (the same conversion as the embedded
SmolLM2) into a cached float32 HF folder keyed by the file's size and hash, logits equal to
transformers reading the file; bad files are one clear line; the cache can be listed and
cleared."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

import tvlens.models.pretrained as P
from tests.models.gguf_files import write_gguf, write_header_only
from tvlens.errors import ModelLoadError
from tvlens.models import load_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("TVLENS_CACHE", str(root))
    return root


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gguf_file_loads_once_with_transformers_logits(arch, tmp_path, cache, monkeypatch):
    path = tmp_path / f"tiny-{arch}.gguf"
    source = write_gguf(path, arch)
    model = load_model(path, device="cpu")
    ref = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name,
                                               dtype=torch.float32).eval()  # fmt: skip
    ids = torch.tensor([[259, 5, 70, 3, 200, 11]])  # 259: <s>
    with torch.no_grad():
        want = ref(ids).logits
        torch.testing.assert_close(model(ids), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(source(ids).logits, want, atol=1e-6, rtol=1e-6)
    s = model.spec
    assert s.source == "gguf" and s.name == str(path) and s.architecture
    assert s.origin["dtype"] == "float32" and s.origin["architecture"] == arch
    assert s.origin["tensor_types"] == ["F32"] and s.path.startswith(str(cache))
    # converted once: the second load reads the cache (a conversion now would fail)
    monkeypatch.setattr(P, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    assert load_model(path, device="cpu").spec.path == s.path


def test_changed_file_gets_a_new_folder_and_the_embedded_model_shares_the_conversion(
    tmp_path, cache, monkeypatch
):
    path = tmp_path / "m.gguf"
    write_gguf(path, "llama", seed=0)
    first = P.ensure_gguf(path)
    write_gguf(path, "llama", seed=1)  # same name and size, other weights
    second = P.ensure_gguf(path)
    assert first != second and P.read_manifest(second) is not None
    # the embedded model's conversion is the same function, with the package recorded
    entry = P.PRETRAINED["smollm2-135m"]
    monkeypatch.setattr(P, "package_gguf", lambda e: path)
    origin = P.write_gguf_folder(entry, tmp_path / "embedded")
    assert origin["architecture"] == "llama" and origin["package"] == entry.package
    assert (tmp_path / "embedded" / "model.safetensors").is_file()


def test_bad_gguf_files_are_one_line(tmp_path, cache):
    good = tmp_path / "good.gguf"
    write_gguf(good, "llama")
    cases = {
        "missing": (tmp_path / "nope.gguf", "does not exist"),
        "text": (tmp_path / "notes.gguf", "not a GGUF file"),
        "truncated": (tmp_path / "cut.gguf", "truncated or damaged"),
        "arch": (tmp_path / "rwkv.gguf", "transformers cannot read from GGUF"),
    }
    cases["text"][0].write_text("hello")
    cases["truncated"][0].write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    write_header_only(cases["arch"][0], "rwkv6")
    for path, match in cases.values():
        with pytest.raises(ModelLoadError, match=match) as e:
            load_model(path, device="cpu")
        assert "\n" not in str(e.value)
    assert "'rwkv6'" in str(pytest.raises(ModelLoadError, P.inspect_gguf, cases["arch"][0]).value)
    assert not (cache / "models").exists() or not any((cache / "models").rglob("*.safetensors"))


def test_cache_list_clear_and_info(tmp_path, cache):
    from tvlens.cli.main import app

    path = tmp_path / "tiny-llama.gguf"
    write_gguf(path, "llama")
    runner = CliRunner()
    info = runner.invoke(app, ["info", "--model", str(path), "--device", "cpu"])
    assert info.exit_code == 0, info.output
    assert "dequantized to float32" in info.output and "prompts start with:" in info.output
    listed = runner.invoke(app, ["cache", "list"])
    assert listed.exit_code == 0 and "tiny-llama" in listed.output and str(path) in listed.output
    assert len(P.cached_models()) == 1
    cleared = runner.invoke(app, ["cache", "clear", "tiny-llama"])
    assert cleared.exit_code == 0 and "deleted 1" in cleared.output
    assert P.cached_models() == []
