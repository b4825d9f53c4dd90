"""The one rule for writing a run or results folder, and the run configs' checks."""

from __future__ import annotations

import json

import pytest

from tvlens.errors import ConfigError, OutputError
from tvlens.extraction.config import VectorsConfig
from tvlens.patching.config import PatchConfig
from tvlens.probing.config import EmergenceConfig
from tvlens.runs import folder_kind, prepare_out_dir, prepare_out_file
from tvlens.runs.config import choices


def _user_folder(path):
    """A folder a user made: notes, a metrics.json and a checkpoints/ of their own."""
    (path / "checkpoints").mkdir(parents=True)
    (path / "checkpoints" / "keep.txt").write_text("mine")
    (path / "notes.txt").write_text("notes")
    (path / "metrics.json").write_text('{"mine": 1}')
    return path


def test_new_and_empty_folders_are_created(tmp_path):
    assert prepare_out_dir(tmp_path / "a" / "b", "vectors").is_dir()
    (tmp_path / "empty").mkdir()
    assert prepare_out_dir(tmp_path / "empty", "patch") == tmp_path / "empty"


def test_a_users_folder_is_refused_and_left_alone(tmp_path):
    user = _user_folder(tmp_path / "user")
    before = {p: p.read_bytes() for p in user.rglob("*") if p.is_file()}
    for kind in ("train-synthetic", "train-regression", "vectors", "probe", "patch", "demo"):
        with pytest.raises(OutputError, match="not empty and holds files tvlens did not write"):
            prepare_out_dir(user, kind)
    assert {p: p.read_bytes() for p in user.rglob("*") if p.is_file()} == before


def test_a_run_of_another_kind_is_refused_and_the_same_kind_accepted(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "patch"}))
    assert folder_kind(run) == "patch"
    assert prepare_out_dir(run, "patch") == run
    with pytest.raises(OutputError, match="holds a tvlens patch run, not a vectors run"):
        prepare_out_dir(run, "vectors")
    # Runs written before config.json named its kind are known by their files.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "td.json").write_text("{}")
    assert folder_kind(tmp_path / "old") == "probe"
    train = tmp_path / "train"
    (train / "checkpoints").mkdir(parents=True)
    (train / "config.json").write_text(json.dumps({"tvlens": "0.1", "family": "regression"}))
    assert folder_kind(train) == "train-regression"


def test_a_file_or_an_unwritable_place_is_refused(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(OutputError, match="is an existing file, not a folder"):
        prepare_out_dir(f, "vectors")
    with pytest.raises(OutputError, match="Cannot write to output folder"):
        prepare_out_dir(f / "sub", "vectors")  # a folder under a file cannot be made
    assert f.read_text() == "x"


def test_read_only_folder(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="Cannot write to output folder"):
            prepare_out_dir(ro / "out", "patch")
    finally:
        ro.chmod(0o700)


def test_out_file(tmp_path):
    mine = tmp_path / "metrics.json"
    mine.write_text('{"mine": 1}')
    with pytest.raises(OutputError, match="exists and is not a tvlens eval result"):
        prepare_out_file(mine, "eval")
    assert mine.read_text() == '{"mine": 1}'
    (tmp_path / "ok.json").write_text(json.dumps({"kind": "eval"}))
    assert prepare_out_file(tmp_path / "ok.json", "eval").name == "ok.json"
    with pytest.raises(OutputError, match="is a folder"):
        prepare_out_file(tmp_path, "eval")


def test_configs_check_choices_and_bounds_once():
    assert choices(PatchConfig, "head_act") == ("z", "q", "k", "v")
    with pytest.raises(ConfigError, match="Unknown head_act 'x': head_act must be one of z, q"):
        PatchConfig(head_act="x")
    with pytest.raises(ConfigError, match=r"k \(--k\) must be >= 2, got 0"):
        PatchConfig(k=0)
    with pytest.raises(ConfigError, match="max_batch .* must be >= 1, got 0"):
        PatchConfig(max_batch=0)
    with pytest.raises(ConfigError, match="top_k_heads .* must be >= 1, got -3"):
        VectorsConfig(top_k_heads=-3)
    with pytest.raises(ConfigError, match=r"k \(--k\) must be >= 2 for fv"):
        VectorsConfig(methods="all", k=1)
    assert VectorsConfig(methods=("hendel",), k=1).k == 1  # a task vector from one demonstration
    with pytest.raises(ConfigError, match="Unknown method 'tv': the extraction methods are"):
        VectorsConfig(methods="hendel,tv")
    # the old keyword and the old name of "all", both warned
    with pytest.warns(DeprecationWarning, match="method= is renamed methods="):
        with pytest.warns(DeprecationWarning, match="'both' is renamed 'all'"):
            old = VectorsConfig().with_overrides(method="both")
    assert old.methods == VectorsConfig(methods="all,fv").methods == ("hendel", "fv")
    with pytest.raises(ConfigError, match="Unknown perturb_mode 'flip'"):
        EmergenceConfig(perturb_mode="flip")
    d = PatchConfig(component="resid", tasks=["latent_0"]).to_dict()
    assert d["kind"] == "patch" and d["component"] == "resid" and d["tasks"] == ["latent_0"]
    assert json.loads(json.dumps(d)) == d
