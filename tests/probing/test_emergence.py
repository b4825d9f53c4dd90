"""Emergence over checkpoints (Han et al. 2025) on tiny runs of both task families."""

from __future__ import annotations

import json

import numpy as np

from tvlens.probing.emergence import emergence
from tvlens.probing.family import RegressionFamily, family_for_run


def test_emergence_token_run_shapes_and_keys(token_run):
    res = emergence(token_run, n_prompts=12, progress=False, revisions=[10, 150])
    assert res.kind == "tokens" and res.steps == [10, 150]
    assert np.array(res.td).shape == (2, 2)  # checkpoints x layers
    assert set(res.td_per_task[0][0]) == set(res.tasks) | {"null"}
    assert res.accuracy is not None and set(res.accuracy[1]) == set(res.tasks)
    d = res.to_dict()
    assert {"onsets", "peak_layer", "td_vs_neg_loss", "loss", "config"} <= set(d)
    json.dumps(d)
    f = res.to_dataframe(per_task=True)
    assert len(f) == 2 * 2 * (len(res.tasks) + 1)  # checkpoints x layers x (tasks + Null)
    row = f[(f.step == 150) & (f.layer == 1) & (f.task == res.tasks[0])].iloc[0]
    assert row.td == res.td_per_task[1][1][res.tasks[0]]
    assert row.accuracy == res.accuracy[1][res.tasks[0]]


def test_emergence_regression_run_has_loss_and_no_accuracy(reg_run):
    fam = family_for_run(reg_run)
    assert isinstance(fam, RegressionFamily) and fam.n_points == 8
    res = emergence(reg_run, n_prompts=12, progress=False)
    assert res.kind == "regression" and res.accuracy is None
    assert len(res.steps) == len(res.td) == len(res.loss) >= 2
    assert all(0.0 <= v <= 1.0 for row in res.td for v in row)
    assert set(res.onsets()) == {"basis_0", "basis_1", "basis_2", "basis_3"}


def test_run_emergence_returns_a_typed_result(token_run, tmp_path):
    """``run_emergence`` gives an ``EmergenceRun``: the series, the perturbation tests (absent
    when skipped), the emergence table, and the mapping it used to be."""
    from tvlens.probing.emergence import EmergenceResult
    from tvlens.probing.run import EmergenceRun, run_emergence

    res = run_emergence(token_run, tmp_path / "skip", revisions=["10", "150"], n_prompts=12,
                        perturb_layer=-1, progress=False)  # fmt: skip
    assert isinstance(res, EmergenceRun) and isinstance(res["emergence"], EmergenceResult)
    assert "perturbation" not in res and res.get("perturbation", []) == []
    assert res.to_dataframe().equals(res.emergence.to_dataframe())
    res = run_emergence(token_run, tmp_path / "pert", revisions=["10", "150"], n_prompts=12,
                        perturb_layer=0, perturb_prompts=4, progress=False)  # fmt: skip
    assert res["perturbation"] and all(p.layer == 0 for p in res["perturbation"])
    saved = json.loads((tmp_path / "pert" / "perturbation.json").read_text())
    assert res.to_dict()["perturbation"] == saved
    # emergence.json loads back through its result class (issue 29)
    back = EmergenceResult.load(tmp_path / "pert" / "emergence.json")
    assert back.to_dict() == res.emergence.to_dict()
