"""The TaskFamily protocol: both families implement it, runs name their family, bad runs
are one clear error."""

from __future__ import annotations

import json

import pytest

from tvlens.errors import TVLensError
from tvlens.probing.family import (
    FAMILIES,
    RegressionFamily,
    TaskFamily,
    TokenFamily,
    family_for_run,
    is_regression_run,
)
from tvlens.tasks import get_suite
from tvlens.tasks.regression import RegressionMixture


def test_both_families_implement_the_protocol():
    tok = TokenFamily(get_suite("latent", n_tasks=2, n_symbols=8, seed=5), k=4)
    reg = RegressionFamily(RegressionMixture(d_in=8, n_tasks=2, rank=2, seed=1), n_points=4)
    for fam, has_acc in ((tok, True), (reg, False)):
        assert isinstance(fam, TaskFamily)
        assert fam.has_accuracy is has_acc and fam.kind in FAMILIES
        assert fam.describe()["kind"] == fam.kind
    assert tok.task_names == ["latent_0", "latent_1"] and len(reg.task_names) == 2
    assert not isinstance(object(), TaskFamily)


def test_family_for_run_reads_the_config_and_refuses_what_it_does_not_know(tmp_path):
    with pytest.raises(TVLensError, match="no config.json"):
        family_for_run(tmp_path / "no-run")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"tvlens": "0.1.0", "family": "audio"}))
    with pytest.raises(TVLensError, match="unknown task family 'audio'"):
        family_for_run(run)
    mix = RegressionMixture(d_in=8, n_tasks=2, rank=2, seed=1)
    cfg = {"tvlens": "0.1.0", "family": "regression", "mixture": mix.to_dict(),
           "config": {"n_points": 6}}  # fmt: skip
    (run / "config.json").write_text(json.dumps(cfg))
    fam = family_for_run(run, batch_size=7)
    assert isinstance(fam, RegressionFamily) and (fam.n_points, fam.batch_size) == (6, 7)
    assert fam.mixture.to_dict() == mix.to_dict()
    assert is_regression_run(run) and not is_regression_run(tmp_path / "no-run")
