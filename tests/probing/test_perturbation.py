"""The perturbation test (Han et al. 2025) on tiny runs of both task families."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tvlens.errors import LayerError, TVLensError
from tvlens.probing.family import family_for_run
from tvlens.probing.perturbation import perturbation


def test_perturbation_shift_same_task_is_no_change_cross_task_changes(reg_run):
    fam = family_for_run(reg_run)
    model = fam.load(reg_run)
    res = perturbation(model, fam, layer=0, n_prompts=16, mode="shift")
    dl = res.delta_loss
    assert dl.shape == (4, 4)
    f = res.to_dataframe()
    assert len(f) == 16 and np.allclose(f.delta_loss.to_numpy().reshape(4, 4), dl)
    assert np.allclose(np.diag(dl), 0.0, atol=1e-5)
    assert np.abs(dl[~np.eye(4, dtype=bool)]).mean() > 5e-4  # another basis moves the query
    rep = perturbation(model, fam, layer=1, n_prompts=16, mode="replace")
    assert rep.mode == "replace" and rep.accuracy is None
    json.dumps(rep.to_dict())
    with pytest.raises(LayerError):
        perturbation(model, fam, layer=7)
    with pytest.raises(TVLensError):
        perturbation(model, fam, layer=0, mode="swap")


def test_perturbation_token_family_own_mean_keeps_accuracy_better_than_others(token_run):
    fam = family_for_run(token_run)
    model = fam.load(token_run)
    res = perturbation(model, fam, layer=0, n_prompts=16, mode="shift")
    da = res.delta_accuracy
    assert np.allclose(np.diag(da), 0.0)  # own mean: no change at all
    assert res.summary()["cross_task_delta_accuracy"] <= 0.0
