"""The synthetic setting's target, trained once per test session (~40 s on 2 cores)."""

from pathlib import Path

import pytest

from tvlens.atv.train import train_synthetic_target


@pytest.fixture(scope="session")
def atv_target(tmp_path_factory) -> Path:
    return train_synthetic_target(tmp_path_factory.mktemp("atv") / "target", progress=False)
