"""How well hidden states encode the task: task decodability (Han et al. 2025), a linear
probe, a classifier-free separability index, and a 2-D projection.

Task decodability (TD): each point (the hidden state at the last query token of one prompt)
is classified by the majority vote of its k=10 nearest *other* points (leave-one-out kNN);
TD is the fraction classified correctly, overall and per task. Built on scikit-learn's
``NearestNeighbors``: leaving one point out of a kNN classifier is the same as asking for
k+1 neighbours and dropping the point itself, so one neighbour search replaces n refits
(tests check equality with ``cross_val_predict(KNeighborsClassifier, cv=LeaveOneOut())``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from tvlens.errors import EmptyTaskError
from tvlens.probing.config import KNN_K

Points = Float[np.ndarray, "n d"] | Float[Tensor, "n d"]


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _encode_labels(labels: Sequence) -> tuple[np.ndarray, list]:
    names = list(dict.fromkeys(labels))  # order of first appearance
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[x] for x in labels]), names


@dataclass(frozen=True)
class TDResult:
    """Task decodability: ``overall`` and ``per_task`` (fraction of that task's points whose
    leave-one-out kNN vote is their own task)."""

    overall: float
    per_task: dict[str, float]
    k: int
    n: int


def loo_knn_predict(
    X: Float[np.ndarray, "n d"], y: Int[np.ndarray, " n"], k: int = KNN_K
) -> Int[np.ndarray, " n"]:
    """Leave-one-out kNN predictions (uniform majority vote, ties to the smallest label, as
    scikit-learn's ``KNeighborsClassifier``)."""
    n = len(X)
    if n <= k:
        raise EmptyTaskError(f"Leave-one-out kNN with k={k} needs more than {k} points, got {n}.")
    nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
    _, idx = nn.kneighbors(X)
    preds = np.empty(n, dtype=y.dtype)
    n_classes = int(y.max()) + 1
    for i in range(n):
        row = idx[i]
        # Drop the point itself; if a duplicate pushed it out of the list, drop the farthest.
        others = row[row != i][:k] if (row == i).any() else row[:k]
        preds[i] = np.bincount(y[others], minlength=n_classes).argmax()
    return preds


def task_decodability(hidden: Points, labels: Sequence, k: int = KNN_K) -> TDResult:
    """TD of points ``hidden`` ``[n, d]`` labelled by task (include the Null task's points)."""
    X = _as_numpy(hidden)
    y, names = _encode_labels(labels)
    if len(X) != len(y):
        raise ValueError(f"{len(X)} points but {len(y)} labels.")
    if len(names) < 2:
        raise EmptyTaskError("Task decodability needs at least two tasks (add the Null task).")
    pred = loo_knn_predict(X, y, k)
    correct = pred == y
    per = {str(n): float(correct[y == i].mean()) for i, n in enumerate(names)}
    return TDResult(float(correct.mean()), per, k, len(y))


def probe_accuracy(
    hidden: Points, labels: Sequence, folds: int = 5, seed: int = 0, max_iter: int = 1000
) -> float:
    """Cross-validated accuracy of a standardised multinomial logistic-regression probe."""
    X = _as_numpy(hidden)
    y, _ = _encode_labels(labels)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, X, y, cv=cv).mean())


def separability(hidden: Points, labels: Sequence) -> float:
    """Silhouette score of the task clusters (−1..1; no classifier involved)."""
    X = _as_numpy(hidden)
    y, names = _encode_labels(labels)
    if len(names) < 2:
        raise EmptyTaskError("Separability needs at least two tasks.")
    return float(silhouette_score(X, y))


def project_2d(hidden: Points, method: str = "pca", seed: int = 0) -> Float[np.ndarray, "n 2"]:
    """2-D coordinates for a scatter plot: PCA, or UMAP when ``method="umap"`` and
    ``umap-learn`` is installed."""
    X = _as_numpy(hidden)
    if method == "umap":
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError as e:
            raise ImportError("method='umap' needs `pip install umap-learn`.") from e
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(X)
    if method != "pca":
        raise ValueError(f"method must be 'pca' or 'umap', got {method!r}.")
    return PCA(n_components=2, random_state=seed).fit_transform(X)
