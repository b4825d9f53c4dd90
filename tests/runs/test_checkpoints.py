"""tvlens training-run folders: checkpoint listing, revision names, loading, atomic writes."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from tvlens.errors import CheckpointError
from tvlens.models import list_checkpoints, load_checkpoints, load_model, resolve_checkpoint
from tvlens.runs.checkpoints import (
    REQUIRED_FILES,
    checkpoint_name,
    clean_temporary,
    is_run_dir,
    validate_checkpoint,
    write_atomically,
)
from tvlens.tasks import latent_mapping_suite

SUITE_SPEC = {"name": "latent", "n_tasks": 2, "n_symbols": 8, "seed": 0}


@pytest.fixture(scope="session")
def gpt2(make_tiny, symbol_tokenizer):
    return make_tiny("run-gpt2", "gpt2", symbol_tokenizer, n_layers=2)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, gpt2) -> Path:
    """A run written by hand: one complete checkpoint at step 10, one half-written at 20."""
    run = tmp_path_factory.mktemp("run")
    (run / "config.json").write_text(json.dumps({"tvlens": "0.1.0", "config": {}}))
    step = run / "checkpoints" / "step-000000010"
    shutil.copytree(gpt2.folder, step)
    (step / "tvlens.json").write_text(json.dumps({"step": 10, "suite": SUITE_SPEC}))
    tmp = run / "checkpoints" / ".tmp-step-000000020"
    shutil.copytree(gpt2.folder, tmp)
    return run


def _fake_run(root: Path, steps: list[int]) -> Path:
    """A run whose checkpoints hold empty files: enough for listing and resolving."""
    (root / "config.json").write_text(json.dumps({"tvlens": "0.1.0"}))
    for s in steps:
        folder = root / "checkpoints" / checkpoint_name(s)
        folder.mkdir(parents=True)
        for f in REQUIRED_FILES:
            (folder / f).write_text("{}")
    return root


def test_checkpoint_name_and_run_detection(run_dir, gpt2, tmp_path):
    assert checkpoint_name(750) == "step-000000750"
    assert is_run_dir(run_dir)
    assert not is_run_dir(gpt2.folder)  # an HF folder: no checkpoints/
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert not is_run_dir(tmp_path)  # config.json without the "tvlens" key
    (tmp_path / "config.json").write_text("{broken")
    assert not is_run_dir(tmp_path)


def test_list_checkpoints_ignores_temporary_folders(run_dir):
    ckpts = list_checkpoints(run_dir)
    assert [c.step for c in ckpts] == [10]
    assert ckpts[0].path == run_dir / "checkpoints" / "step-000000010"
    assert ckpts[0].revision == "step10"


@pytest.mark.parametrize("revision", ["step10", 10, "10", "step-10", None, "final", -1], ids=repr)
def test_load_run_checkpoint(run_dir, gpt2, revision):
    model = load_model(run_dir, revision=revision, device="cpu")
    spec = model.spec
    assert spec.step == 10 and spec.revision == "step10" and spec.source == "tvlens"
    assert spec.path == str(run_dir / "checkpoints" / "step-000000010")
    assert spec.name == str(run_dir)
    assert spec.train_info == {"step": 10, "suite": SUITE_SPEC}
    assert (spec.n_layers, spec.d_model) == (2, 32)
    tokens = torch.tensor([[1, 7, 3, 8, 4, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), gpt2.hf(tokens).logits, atol=1e-5, rtol=0)


def test_training_suite_is_rebuilt(run_dir):
    model = load_model(run_dir, device="cpu")
    suite = model.training_suite()
    assert suite == latent_mapping_suite(n_tasks=2, n_symbols=8, seed=0)
    assert suite.spec == SUITE_SPEC


def test_plain_folder_has_no_training_suite(gpt2):
    assert gpt2.model.training_suite() is None


def test_single_checkpoint_folder_loads(run_dir):
    model = load_model(run_dir / "checkpoints" / "step-000000010", device="cpu")
    assert model.spec.source == "tvlens" and model.spec.step == 10
    assert model.spec.revision is None


def test_load_checkpoints_yields_steps(run_dir):
    got = [(step, m.spec.step) for step, m in load_checkpoints(run_dir, device="cpu")]
    assert got == [(10, 10)]
    assert list(load_checkpoints(run_dir, steps=[5], device="cpu")) == []


def test_resolve_checkpoint_names(tmp_path):
    run = _fake_run(tmp_path, [1, 10, 100])
    steps = {
        None: 100,
        "final": 100,
        "main": 100,
        "last": 100,
        -1: 100,
        -3: 1,
        "step10": 10,
        "step-10": 10,
        10: 10,
        "1": 1,
    }
    for revision, step in steps.items():
        assert resolve_checkpoint(run, revision).step == step, revision
    with pytest.raises(CheckpointError, match="index -4 invalid"):
        resolve_checkpoint(run, -4)
    with pytest.raises(CheckpointError, match=r"no checkpoint at step 20.*\[1, 10, 100\]"):
        resolve_checkpoint(run, "step20")
    with pytest.raises(CheckpointError, match="Bad revision 'epoch3'"):
        resolve_checkpoint(run, "epoch3")


def test_validate_checkpoint_names_missing_files(tmp_path):
    run = _fake_run(tmp_path, [5])
    folder = run / "checkpoints" / checkpoint_name(5)
    assert validate_checkpoint(folder) == folder
    (folder / "model.safetensors").unlink()
    (folder / "tvlens.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing \['model.safetensors', 'tvlens.json'\]"):
        validate_checkpoint(folder)
    with pytest.raises(CheckpointError, match="incomplete"):
        resolve_checkpoint(run, 5)


def test_write_atomically(tmp_path):
    final = tmp_path / "checkpoints" / "step-1"

    def write(text):
        def _write(folder: Path) -> None:
            folder.mkdir()
            (folder / "a.txt").write_text(text)

        return _write

    assert write_atomically(final, write("one")) == final
    assert (final / "a.txt").read_text() == "one"
    write_atomically(final, write("two"))  # replaces the existing folder
    assert (final / "a.txt").read_text() == "two"
    assert sorted(p.name for p in final.parent.iterdir()) == ["step-1"]

    def failing(folder: Path) -> None:
        folder.mkdir()
        (folder / "a.txt").write_text("partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_atomically(tmp_path / "checkpoints" / "step-2", failing)
    # The half-written folder is gone and the old checkpoint untouched.
    assert sorted(p.name for p in final.parent.iterdir()) == ["step-1"]
    assert (final / "a.txt").read_text() == "two"


def test_clean_temporary(tmp_path):
    run = _fake_run(tmp_path, [3])
    for name in (".tmp-step-000000004-123", ".old-step-000000003-9"):
        (run / "checkpoints" / name).mkdir()
    clean_temporary(run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000000003"]
