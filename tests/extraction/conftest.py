"""Fixtures shared by the extraction oracles (state vectors, LTV)."""

from __future__ import annotations

import pytest

from tvlens.tasks import Task


@pytest.fixture(scope="module")
def chain_task() -> Task:
    """Ten single-token pairs over the letters vocabulary (each letter to the next)."""
    w = ("a", "b", "c", "d", "e", "f", "g", "h", "x", "y")
    return Task.from_pairs("next", [(w[i], w[(i + 1) % len(w)]) for i in range(len(w))])
