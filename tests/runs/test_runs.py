"""The one rule for writing a run or results folder, and the run configs' checks."""

from __future__ import annotations

import json

import pytest

from tvlens.errors import ConfigError, OutputError
from tvlens.extraction.config import VectorsConfig
from tvlens.patching.config import PatchConfig
from tvlens.probing.config import EmergenceConfig
from tvlens.runs import (
    RUN_MARKER,
    adopt_folder,
    claim_file,
    created_count,
    discard_unused_folders,
    folder_kind,
    prepare_out_dir,
    prepare_out_file,
    tidy_on_error,
)
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
    # A file's name alone is never a run: td.json without tvlens's signature is refused
    # with the way to reuse an older tvlens's folder (adopt_folder), and left as it was.
    old = tmp_path / "old"
    old.mkdir()
    (old / "td.json").write_text("{}")
    assert folder_kind(old) is None
    with pytest.raises(OutputError, match=r"holds td.json but not tvlens's signature .*adopt_fo"):
        prepare_out_dir(old, "probe")
    assert sorted(p.name for p in old.iterdir()) == ["td.json"]
    assert adopt_folder(old, "probe") == old and folder_kind(old) == "probe"
    assert prepare_out_dir(old, "probe") == old
    with pytest.raises(OutputError, match="already a tvlens probe run, not a patch run"):
        adopt_folder(old, "patch")
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
    (tmp_path / "unsigned.json").write_text(json.dumps({"kind": "eval"}))
    with pytest.raises(OutputError, match="exists and is not a tvlens eval result"):
        prepare_out_file(tmp_path / "unsigned.json", "eval")  # a kind key alone is no signature
    (tmp_path / "ok.json").write_text(json.dumps({"kind": "eval", "tvlens": "0.1.0"}))
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
    every = ("hendel", "fv", "icv", "i2cl", "state_vector", "ltv")  # "all": in registry order
    assert old.methods == VectorsConfig(methods="all,fv").methods == every
    with pytest.raises(ConfigError, match="Unknown perturb_mode 'flip'"):
        EmergenceConfig(perturb_mode="flip")
    d = PatchConfig(component="resid", tasks=["latent_0"]).to_dict()
    assert d["kind"] == "patch" and d["component"] == "resid" and d["tasks"] == ["latent_0"]
    assert json.loads(json.dumps(d)) == d


def test_a_new_folder_is_signed_and_a_signed_folder_is_reused(tmp_path):
    out = prepare_out_dir(tmp_path / "new", "vectors")
    marker = json.loads((out / RUN_MARKER).read_text())
    assert marker["kind"] == "vectors" and marker["tvlens"]
    (out / "results.json").write_text("{}")
    assert folder_kind(out) == "vectors" and prepare_out_dir(out, "vectors") == out
    with pytest.raises(OutputError, match="holds a tvlens vectors run, not a probe run"):
        prepare_out_dir(out, "probe")


def test_one_file_is_written_only_when_new_in_a_run_or_signed(tmp_path):
    mine = tmp_path / "plot.html"
    mine.write_text("mine")
    with pytest.raises(OutputError, match="exists and was not written by tvlens"):
        claim_file(mine)
    assert mine.read_text() == "mine"
    assert claim_file(tmp_path / "new.json") == tmp_path / "new.json"
    signed = tmp_path / "signed.json"
    signed.write_text(json.dumps({"tvlens_result": {}}))
    assert claim_file(signed) == signed
    run = prepare_out_dir(tmp_path / "run", "patch")
    (run / "sub").mkdir()
    (run / "sub" / "x.html").write_text("tvlens's")
    assert claim_file(run / "sub" / "x.html")  # in a tvlens run folder
    with pytest.raises(OutputError, match="is a folder"):
        claim_file(run)


def test_a_failing_runner_removes_only_the_folders_it_created_unused(tmp_path):
    used = tmp_path / "keep"
    used.mkdir()
    (used / "mine.txt").write_text("x")

    @tidy_on_error
    def runner(out, fail):
        out = prepare_out_dir(out, "patch")
        if fail == "late":
            (out / "patching.json").write_text("{}")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        runner(tmp_path / "a" / "b" / "c", "early")
    assert not (tmp_path / "a").exists()  # every folder it made, up to the topmost
    with pytest.raises(RuntimeError):
        runner(tmp_path / "written", "late")
    assert (tmp_path / "written" / "patching.json").is_file()  # what it wrote stays
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError):
        runner(empty, "early")
    assert empty.is_dir() and not any(empty.iterdir())  # the user's folder stays, unsigned
    n = created_count()
    prepare_out_dir(tmp_path / "direct", "patch")
    assert discard_unused_folders(n) == [tmp_path / "direct"]
