"""What kind of source a model name is (models/sources.py), worked out offline and before
torch: typos are refused in one line with a suggestion, hub look-ups only when allowed, and
``get_suite`` takes one task file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tvlens.errors import ModelLoadError, UnknownTaskError
from tvlens.models import load_model
from tvlens.models.sources import hub_allowed, model_source
from tvlens.tasks import get_suite

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def runs_here(tmp_path, monkeypatch):
    """A working folder with ``runs/tiny`` and ``runs/tiny2``, as the docs lay them out."""
    for name in ("tiny", "tiny2"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_typo_in_a_run_path_names_what_the_folder_holds(runs_here):
    """``runs/tny`` went to the hub (24 s of retries) because it is not written ``./runs``:
    its first component exists here, so it is a path."""
    with pytest.raises(ModelLoadError) as e:
        load_model("runs/tny")
    assert str(e.value).startswith(
        "Model folder 'runs/tny' does not exist: 'runs/' has no 'tny'; it has 'tiny', 'tiny2'. "
        "Did you mean 'runs/tiny'?"
    )
    with pytest.raises(ModelLoadError, match=r"'runs/' has no 'nope'; it has 'tiny'"):
        load_model("./runs/nope/step-1")  # the nearest folder that exists
    with pytest.raises(ModelLoadError, match=r"Model folder 'elsewhere/a/b' does not exist"):
        load_model("elsewhere/a/b")  # three components: not a hub name


def test_a_short_name_typo_gets_did_you_mean(runs_here, monkeypatch):
    with pytest.raises(
        ModelLoadError, match=r"HF_HUB_OFFLINE is set\. Did you mean 'smollm2-135m'"
    ):
        load_model("smolm2-135m")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("TVLENS_ALLOW_HUB", raising=False)
    with pytest.raises(ModelLoadError, match=r"allow_hub=True or TVLENS_ALLOW_HUB=1\. Did you "):
        load_model("SmolM2-135M")  # (short names are case-insensitive)
    with pytest.raises(ModelLoadError, match=r"Did you mean './runs'\?$"):
        load_model("rusn")  # a folder here, misspelt


def test_hub_allowed_needs_an_opt_in_and_no_offline_flag(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TVLENS_ALLOW_HUB"):
        monkeypatch.delenv(var, raising=False)
    assert not hub_allowed() and hub_allowed(True)
    monkeypatch.setenv("TVLENS_ALLOW_HUB", "1")
    assert hub_allowed() and not hub_allowed(False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_allowed() and not hub_allowed(True)


def _fresh(code: str, **env: str | None) -> dict:
    """Run ``code`` in a fresh interpreter (this tree's tvlens) and read the JSON it prints."""
    full = {**os.environ, "PYTHONPATH": str(REPO)}
    for k, v in env.items():
        full.pop(k, None) if v is None else full.__setitem__(k, v)
    out = subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


BAD_NAMES = """
import json, sys
from tvlens.models import load_model
from tvlens.tasks import get_suite
seen = []
for call, arg in [(load_model, "/does/not/exist"), (load_model, "smolm2-135m"),
                  (load_model, "nobody/no-model"), (get_suite, "/does/not/exist"),
                  (get_suite, "nowhere.json"), (get_suite, "latnt")]:
    try:
        call(arg)
    except Exception as e:
        seen.append([type(e).__name__, str(e)])
heavy = [m for m in ("torch", "transformer_lens", "transformers") if m in sys.modules]
print(json.dumps({"errors": seen, "heavy": heavy}))
"""


def test_bad_names_are_refused_before_torch_is_imported(tmp_path):
    """The checks run before torch, TransformerLens or transformers are imported (what makes
    them take a fraction of a second; bench/name_checks.py times them)."""
    got = _fresh(BAD_NAMES, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path))
    assert got["heavy"] == []
    kinds = [k for k, _ in got["errors"]]
    assert kinds == ["ModelLoadError"] * 3 + ["UnknownTaskError"] * 3
    says = [m for _, m in got["errors"]]
    assert says[0].startswith("Model folder '/does/not/exist' does not exist: '/' has no 'does'")
    assert "Did you mean 'smollm2-135m'?" in says[1]
    assert "not a local path, a tvlens short name" in says[2]
    assert "Suite folder or file 'nowhere.json' does not exist" in says[4]
    assert says[5].endswith("Did you mean 'latent'?")


def test_an_unreachable_hub_is_one_line_without_retries(tmp_path):
    """With the network allowed but the hub out of reach (a closed port here), one look-up
    says so; nothing heavy is imported first."""
    code = """
import json, sys
from tvlens.models import load_model
try:
    load_model("nobody/no-model")
except Exception as e:
    print(json.dumps({"error": [type(e).__name__, str(e)], "torch": "torch" in sys.modules}))
"""
    got = _fresh(
        code, HF_HUB_OFFLINE=None, TRANSFORMERS_OFFLINE=None, TVLENS_ALLOW_HUB="1",
        HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path),
    )  # fmt: skip
    kind, says = got["error"]
    assert kind == "ModelLoadError" and "\n" not in says
    assert says.startswith("Could not reach the HF hub to look up 'nobody/no-model'")
    assert got["torch"] is False


def test_a_hub_name_in_the_local_cache_is_a_hub_source(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--someorg--some-model"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    source = model_source("someorg/some-model")
    assert (source.kind, source.cached) == ("hub", True)
    assert model_source("someorg/some-model", revision="abc123").cached
    with pytest.raises(ModelLoadError, match="local HF cache at revision 'v2'"):
        model_source("someorg/some-model", revision="v2")


def test_the_kind_of_each_source(tiny, tmp_path):
    assert model_source(object()).kind == "object"
    assert model_source("SmolLM2-135M").kind == "pretrained"
    assert model_source(tiny.folder).kind == "folder"
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny.folder, ckpt)
    (ckpt / "tvlens.json").write_text(json.dumps({"step": 3}))
    assert model_source(ckpt).kind == "checkpoint"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"tvlens": "0", "config": {}}))
    assert model_source(run).kind == "run"
    with pytest.raises(ModelLoadError, match=r"GGUF file 'x\.gguf' does not exist"):
        model_source("x.gguf")
    afile = tmp_path / "weights.bin"
    afile.write_bytes(b"0")
    with pytest.raises(ModelLoadError, match="is a file, not a model folder"):
        model_source(afile)


def test_a_folder_named_like_a_gguf_file_is_a_folder(tiny, tmp_path):
    """A folder ``x.gguf`` holding an HF model was reported as a missing GGUF file."""
    folder = tmp_path / "m.gguf"
    shutil.copytree(tiny.folder, folder)
    assert model_source(str(folder)).kind == "folder"
    model = load_model(str(folder), device="cpu")
    assert model.spec.source == "folder" and model.n_layers == tiny.model.n_layers


# ---------------------------------------------------------------------------- suites


@pytest.mark.parametrize(
    "shape",
    [
        [{"input": "a", "output": "b"}, {"input": "c", "output": "d"}],
        {"a": "b", "c": "d"},
        {"train": [{"input": "a", "output": "b"}], "test": [{"input": "c", "output": "d"}]},
    ],
    ids=["list", "hendel", "splits"],
)
def test_get_suite_takes_one_task_file(tmp_path, shape):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(shape))
    suite = get_suite(str(path))
    assert suite.names == ["pairs"]
    assert [(x.input, x.output) for x in suite["pairs"].examples] == [("a", "b"), ("c", "d")]
    assert get_suite(**suite.spec) == suite  # rebuilt from its spec, as saved runs do


def test_get_suite_refuses_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("a b")
    with pytest.raises(UnknownTaskError, match="is a file but not a .json task file"):
        get_suite(str(path))


def test_cli_suite_takes_one_task_file(tmp_path):
    from typer.testing import CliRunner

    from tvlens.cli import app

    path = tmp_path / "pairs.json"
    path.write_text(json.dumps({"hot": "cold", "up": "down"}))
    res = CliRunner().invoke(app, ["suites", str(path)])
    assert res.exit_code == 0, res.output
    assert "pairs" in res.output and "'hot' -> 'cold'" in res.output
    missing = str(tmp_path / "n.json")
    args = ["--model", str(tmp_path), "--suite", missing, "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(app, ["vectors", *args])
    assert res.exit_code == 2 and "Suite folder or file" in res.output
