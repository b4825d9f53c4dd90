"""Task decodability and probes on planted data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from tvlens.errors import EmptyTaskError
from tvlens.probing import (
    loo_knn_predict,
    probe_accuracy,
    project_2d,
    separability,
    task_decodability,
)


def clusters(n_tasks=4, per=30, d=16, spread=1.0, sep=20.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_tasks, d)) * sep
    X = np.concatenate([c + spread * rng.normal(size=(per, d)) for c in centers])
    labels = [f"task{i}" for i in range(n_tasks) for _ in range(per)]
    return X, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loo_knn_equals_sklearn_leave_one_out(seed):
    """An independent computation: sklearn refits the classifier n times."""
    X, labels = clusters(n_tasks=3, per=20, d=5, sep=1.0, seed=seed)  # overlapping: errors
    y = np.array([int(s[-1]) for s in labels])
    ref = cross_val_predict(KNeighborsClassifier(n_neighbors=10), X, y, cv=LeaveOneOut())
    got = loo_knn_predict(X, y, k=10)
    np.testing.assert_array_equal(got, ref)
    assert 0.0 < (got == y).mean() < 1.0  # the case is not trivial


def test_separated_clusters_give_td_one():
    X, labels = clusters(sep=50.0)
    td = task_decodability(torch.tensor(X), labels)
    assert td.overall == 1.0 and set(td.per_task.values()) == {1.0}
    assert td.k == 10 and td.n == 120
    assert probe_accuracy(X, labels) == 1.0
    assert separability(X, labels) > 0.9


def test_identical_distributions_give_chance():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, 8))
    labels = [f"t{i % 4}" for i in range(800)]
    td = task_decodability(X, labels)
    assert abs(td.overall - 0.25) < 0.06
    assert abs(separability(X, labels)) < 0.05


def test_per_task_td_finds_the_mixed_up_tasks():
    X, labels = clusters(n_tasks=3, per=40, sep=30.0)
    X[40:80] = X[:40] + 0.01 * np.random.default_rng(1).normal(size=(40, 16))  # task1 ~ task0
    td = task_decodability(X, labels)
    assert td.per_task["task2"] == 1.0
    assert td.per_task["task0"] < 0.8 and td.per_task["task1"] < 0.8


def test_projection_and_bad_inputs():
    X, labels = clusters()
    xy = project_2d(X)
    assert xy.shape == (120, 2)
    with pytest.raises(EmptyTaskError, match="at least two tasks"):
        task_decodability(X, ["a"] * len(X))
    with pytest.raises(EmptyTaskError, match="more than 10 points"):
        task_decodability(X[:8], labels[:4] + labels[-4:])
    with pytest.raises(ValueError, match="labels"):
        task_decodability(X, labels[:-1])


def test_td_by_layer_on_a_trained_tiny_model(tiny_run):
    from tvlens.extraction import residual_at_query
    from tvlens.models import load_model
    from tvlens.probing import td_by_layer
    from tvlens.tasks import null_task, sample_prompts, tokenize_prompts

    model = load_model(tiny_run, device="cpu")
    suite = model.training_suite()
    res = td_by_layer(model, suite, n_prompts=24, probe=True)
    assert res.tasks == [*suite.names, "null"]  # the Null task is included by default
    assert len(res.td) == len(res.probe) == model.n_layers
    # Equals TD computed by hand on the same prompts' residual stream.
    tasks = [*suite, null_task(suite)]
    prompts, labels = [], []
    for i, t in enumerate(tasks):
        ps = sample_prompts(t, res.k, 24, seed=1000 * i)
        prompts += ps
        labels += [t.name] * len(ps)
    hidden = residual_at_query(model, tokenize_prompts(prompts, model, padding_side="right"))
    for layer in res.layers:
        assert task_decodability(hidden[layer], labels).overall == pytest.approx(
            res.td[layer], abs=1e-9
        )
    # A model that does ICL encodes the task: TD well above chance (1/5 with Null) somewhere
    # (0.42 for this seed), and the last layer beats the first.
    assert max(res.td) > 0.35
    assert res.td[-1] > res.td[0]
    assert res.peak_layer == int(np.argmax(res.td))
