"""The headline claims on the real default preset (minutes on CPU): run with `pytest -m slow`."""

from __future__ import annotations

import pytest

from tvlens.injection import evaluate_task_vectors
from tvlens.models import load_model
from tvlens.training import train_synthetic

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return train_synthetic(
        tmp_path_factory.mktemp("runs") / "default", preset="default", device="cpu", progress=False
    )


def test_default_preset_shows_sharp_icl_emergence(default_run):
    ck = default_run.metrics["checkpoints"]
    assert ck[-1]["mean_icl_accuracy"] >= 0.95
    # A plateau near the 8-task guessing rate, then a jump within a few checkpoints.
    plateau = [c for c in ck if 200 <= c["step"] <= 800]
    assert all(c["mean_icl_accuracy"] < 0.4 for c in plateau)
    assert ck[-1]["accuracy_by_demo"][0] < 0.4  # the first answer has no context


def test_default_model_task_vector_recovers_90_percent_of_icl(default_run):
    model = load_model(default_run.run_dir, device="cpu")
    rep = evaluate_task_vectors(model, model.training_suite(), methods=("hendel",), progress=False)
    assert rep.mean("icl") >= 0.95
    assert rep.mean("task_vector", "hendel") / rep.mean("icl") >= 0.9
