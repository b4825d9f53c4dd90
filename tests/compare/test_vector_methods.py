"""The comparison's fixed-vector baselines come from the extraction registry: every
registered extraction method (ICV, I2CL, state vectors, LTV, a package's own) is the
comparison method ``vector:<name>`` with no edit to tvlens.compare; Hendel's and Todd's keep
their names (``task_vector``, ``function_vector``) and their own classes. A method registered
in this test is offered, validated, and runs in a tiny comparison; its layer chosen on dev
is the same whether its layers are scored in one prefix run or one intervention at a time."""

import json
from dataclasses import dataclass, replace
from typing import ClassVar

import pytest

import tvlens.compare.registry as CR
import tvlens.extraction.registry as ER
from tvlens.compare.config import PRESETS, CompareConfig
from tvlens.compare.run import build_method, cell_path, compare_context, run_compare
from tvlens.compare.setup import SELECTED, Cell
from tvlens.errors import TVLensError
from tvlens.extraction.methods import Extracted, ResidualWrite, option
from tvlens.models import load_model


@dataclass(frozen=True)
class Shift(ResidualWrite):
    """ARCHITECTURE.md's worked example: k-shot minus zero-shot mean residual, added."""

    name: ClassVar[str] = "toy_shift"
    label: ClassVar[str] = "toy shift (add)"
    column: ClassVar[str] = "toy shift (layer)"
    description: ClassVar[str] = "a test's extraction method"
    mode: ClassVar[str] = "add"

    alpha: float = option(1.0, "Strength of the added shift.")

    @property
    def strength(self) -> float:
        return self.alpha

    def extract(self, model, task, *, k, n_extract, seed, template, max_batch, progress):
        from tvlens.extraction.residual import hendel_task_vector

        icl = hendel_task_vector(model, task, k, n_extract, seed=seed, template=template)
        zero = hendel_task_vector(model, task, 0, n_extract, seed=seed, template=template)
        return Extracted(replace(icl, vectors=icl.vectors - zero.vectors, method=self.name))


@dataclass(frozen=True)
class ShiftOneByOne(Shift):
    """The same method, its dev grid not "every layer": each layer applied as an intervention
    (the general path) instead of the one-prefix-run layer sweep."""

    name: ClassVar[str] = "toy_shift_slow"

    def dev_grid(self, model, extracted):
        return [{"layer": layer, "same": 1} for layer in range(model.n_layers)]


@pytest.fixture
def registered(monkeypatch):
    """Both toys registered as extraction methods, both registries restored afterwards."""
    monkeypatch.setattr(ER, "EXTRACTION_METHODS", dict(ER.EXTRACTION_METHODS))
    monkeypatch.setattr(CR, "REGISTRY", dict(CR.REGISTRY))
    ER.register_extraction_method(Shift)
    ER.register_extraction_method(ShiftOneByOne)


@pytest.fixture(scope="module")
def target(atv_target):
    return load_model(atv_target, device="cpu")


def test_every_extraction_method_is_a_comparison_method(registered):
    names = CR.method_names()
    assert names[: len(CR.METHODS)] == list(CR.METHODS)  # the built-in ones first, in order
    for ext in ("icv", "i2cl", "state_vector", "ltv", "toy_shift"):
        assert f"vector:{ext}" in names
        spec = CR.get_method_spec(f"vector:{ext}")
        assert spec.demonstrations and spec.oracle_label and not spec.trained
        assert spec.kwargs == {"extraction": ext}
    assert CR.vector_method_name("hendel") == "task_vector" and "vector:hendel" not in names
    assert CR.get_method_spec("function_vector").cls.endswith(":FunctionVectorMethod")
    assert not any(m.startswith("vector:") for m in CR.METHODS)  # the presets' rows unchanged
    assert "a test's extraction method" in CR.get_method_spec("vector:toy_shift").description
    cfg = PRESETS["tiny"].with_overrides(methods=["task_vector", "vector:toy_shift"])
    assert cfg.methods == ["task_vector", "vector:toy_shift"]
    with pytest.raises(TVLensError, match="'vector:hendel' is 'task_vector'"):
        CompareConfig(methods=["vector:hendel"])
    with pytest.raises(TVLensError, match="Unknown compare method 'vector:nope'.*vector:icv"):
        CompareConfig(methods=["vector:nope"])


def test_an_unregistered_extraction_method_is_refused():
    with pytest.raises(TVLensError, match="Unknown compare method 'vector:toy_shift'"):
        CompareConfig(methods=["vector:toy_shift"])


def test_the_general_path_chooses_as_the_layer_sweep(registered, target, tmp_path):
    ctx = compare_context(PRESETS["tiny"], target, tmp_path)
    fast, slow = (build_method(ctx, f"vector:{n}", 0) for n in ("toy_shift", "toy_shift_slow"))
    fit_fast, fit_slow = fast.fit(ctx.data.in_domain), slow.fit(ctx.data.in_domain)
    assert {t: c["layer"] for t, c in fit_fast["chosen"].items()} == {
        t: c["layer"] for t, c in fit_slow["chosen"].items()
    }
    prompts = ctx.data.in_domain.test
    for a, b in zip(fast.correctness(prompts), slow.correctness(prompts), strict=True):
        assert a.tolist() == b.tolist()
    assert fit_fast["options"] == {"alpha": 1.0} and fit_fast["extraction"] == "toy_shift"


def test_a_registered_method_runs_in_the_comparison(registered, target, tmp_path):
    res = run_compare(target, tmp_path / "c", preset="tiny", seeds=1, progress=False,
                      methods=["zero_shot", "vector:toy_shift"])  # fmt: skip
    row = res.summary["vector:toy_shift"]
    for g in ("in_domain", "unseen"):
        assert 0.0 <= row[f"{g}_exact_match_mean"] <= row[f"{g}_first_token_mean"] <= 1.0
    path = cell_path(res.out, Cell("vector:toy_shift", SELECTED, 0))
    assert path.name == "vector-toy_shift__selected__seed0.json"  # no ':' in a file name
    cell = json.loads(path.read_text())
    assert set(cell["info"]["chosen"]) == {"first", "last", "first_of_2", "last_of_2"}
    preds = cell["groups"]["in_domain"]["train"]["pred"]
    assert None not in preds  # what it said per query is recorded
    assert "vector:toy_shift" in (res.out / "table.md").read_text()
