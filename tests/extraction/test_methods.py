"""Extraction methods as objects: the worked example of ARCHITECTURE.md ("A new extraction
method") runs, and a method object defined outside the library works wherever a method name is
taken (the report, the config, the vector table, the CLI's registry, an entry point)."""

import json
import re
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from typer.testing import CliRunner

import tvlens.extraction.registry as R
from tvlens.errors import ConfigError
from tvlens.extraction.config import VectorsConfig
from tvlens.extraction.methods import Extracted, ExtractionMethod, FunctionVector, HendelTaskVector
from tvlens.injection import evaluate_task_vectors
from tvlens.runs.config import choices
from tvlens.tasks import Task, TaskSuite

ROOT = Path(__file__).resolve().parents[2]
K = 2
FIELD = ("icv", "i2cl", "state_vector", "ltv")  # the field's methods, registered after hendel, fv


def worked_example() -> type:
    """The ``MeanShift`` class of ARCHITECTURE.md's "A new extraction method", executed."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text[text.index("**A new extraction method**") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {"__name__": "mypkg_shift"}
    exec(compile(code, "ARCHITECTURE.md", "exec"), namespace)
    return namespace["MeanShift"]


@pytest.fixture(scope="module")
def MeanShift():  # noqa: N802 (a class)
    return worked_example()


@pytest.fixture
def registry(monkeypatch):
    """The registry as it is, restored after the test."""
    monkeypatch.setattr(R, "EXTRACTION_METHODS", dict(R.EXTRACTION_METHODS))
    return R


@pytest.fixture(scope="module")
def model(make_tiny, letters_tokenizer):
    return make_tiny("llama", "llama", letters_tokenizer).model


@pytest.fixture(scope="module")
def suite(letters_task) -> TaskSuite:
    pairs = zip(letters_task.outputs, letters_task.inputs, strict=True)
    return TaskSuite("letters", (letters_task, Task.from_pairs("back", list(pairs))))


def test_the_worked_example_owns_its_option(MeanShift):
    assert MeanShift().alpha == 1.0 and MeanShift(alpha=2.0).strength == 2.0
    assert MeanShift.option_help("alpha") == "Strength of the added shift."
    assert MeanShift(alpha=2.0).options() == {"alpha": 2.0}
    assert FunctionVector().options() == {"top_k_heads": 10, "scale": 1.0}
    with pytest.raises(ConfigError, match="top_k_heads must be >= 1"):
        FunctionVector(top_k_heads=0)


def test_a_method_object_works_in_the_report(MeanShift, model, suite):
    """An unregistered object in ``methods``: its name, label and options reach the report;
    with ``alpha=0`` it adds nothing, so it scores exactly zero-shot at every layer."""
    rep = evaluate_task_vectors(model, suite, methods=[MeanShift(alpha=0.0)], k=K,
                                n_extract=4, progress=False)  # fmt: skip
    assert rep.config["labels"] == {"shift": "mean shift (add)"}
    assert rep.config["options"] == {"shift": {"alpha": 0.0}}
    for t in rep.tasks.values():
        assert t.methods["shift"].test_by_layer == [t.zero_shot] * model.n_layers
    tv = rep.vectors["shift"]["letters"]
    assert tv.method == "shift" and tv.vectors.shape == (model.n_layers, model.d_model)


def test_the_intervention_path_equals_the_layer_sweep(model, suite):
    """A method whose dev grid is not "every layer, in order" is scored by applying its
    intervention choice by choice: for the task vector (layers in reverse) that gives the same
    per-layer accuracies as the one-prefix layer sweep, reversed."""

    @dataclass(frozen=True)
    class Reversed(HendelTaskVector):
        name: ClassVar[str] = "hendel_reversed"

        def dev_grid(self, model, extracted):
            return [{"layer": x} for x in reversed(range(model.n_layers))]

    rep = evaluate_task_vectors(model, suite, methods=("hendel", Reversed()), k=K,
                                n_extract=4, progress=False)  # fmt: skip
    for t in rep.tasks.values():
        fast, slow = t.methods["hendel"], t.methods["hendel_reversed"]
        assert slow.test_by_layer == fast.test_by_layer[::-1]
        assert slow.dev_by_layer == fast.dev_by_layer[::-1]


def test_a_method_tuning_more_than_the_layer(model, suite):
    """A dev grid over (layer, scale): the choice is made on dev and reported."""

    @dataclass(frozen=True)
    class Zero(ExtractionMethod):
        name: ClassVar[str] = "zero"
        label: ClassVar[str] = "zero"
        column: ClassVar[str] = "zero (layer)"

        def extract(self, model, task, *, k, n_extract, seed, template, max_batch, progress):
            from tvlens.extraction import TaskVector

            z = torch.zeros(1, model.d_model)
            return Extracted(TaskVector(z, (0,), model.spec.name, task.name, "zero", n_extract))

        def dev_grid(self, model, extracted):
            return [{"layer": x, "scale": s} for x in range(model.n_layers) for s in (1.0, 2.0)]

        def intervention(self, model, extracted, layer, scale):
            from tvlens.extraction.writes import Intervention, Write

            v = extracted.vector.vectors[0]
            return Intervention((Write(layer, v, "attn_out", "add", scale, positions="all"),))

    rep = evaluate_task_vectors(model, suite, methods=[Zero()], k=K, n_extract=4,
                                progress=False)  # fmt: skip
    for t in rep.tasks.values():
        m = t.methods["zero"]
        assert m.test_by_layer == [t.zero_shot] * (2 * model.n_layers)
        assert m.chosen == {"layer": 0, "scale": 1.0} and m.best_layer == 0


def test_a_method_object_works_in_the_config_and_vector_table(MeanShift, model, suite, tmp_path):
    from tvlens.experiments import vector_table

    cfg = VectorsConfig(methods=["hendel", MeanShift(alpha=2.0)])
    assert cfg.method_names() == ("hendel", "shift")
    assert cfg.to_dict()["methods"] == ["hendel", "shift"]
    assert cfg.method_objects()[1] == MeanShift(alpha=2.0)
    # the same method twice is kept once; two different methods of one name are refused
    assert VectorsConfig(methods=["fv", FunctionVector(), "fv"]).method_names() == ("fv",)
    with pytest.raises(ConfigError, match="Two methods are named 'fv'"):
        VectorsConfig(methods=["fv", FunctionVector(scale=2.0)])
    # A name gets the config's options for it; the config's defaults are the method's.
    assert VectorsConfig(methods="fv", fv_scale=3.0).method_objects() == (
        FunctionVector(top_k_heads=10, scale=3.0),
    )
    assert VectorsConfig().top_k_heads == FunctionVector.top_k_heads
    res = vector_table(model, {"letters": suite}, tmp_path, methods=("hendel", MeanShift()),
                       k=K, n_extract=4, progress=False)  # fmt: skip
    assert res["config"]["methods"] == ["hendel", "shift"]
    table = (tmp_path / "table.md").read_text()
    assert "mean shift (layer)" in table and "task vector (layer)" in table
    assert all("shift" in r and "shift_layer" in r for r in res["rows"])


def test_a_registered_method_is_offered_by_config_and_cli(MeanShift, registry, tmp_path):
    from tvlens.cli.main import app

    registry.register_extraction_method(MeanShift)
    assert "shift" in choices(VectorsConfig, "methods")
    assert VectorsConfig(methods="all").method_names() == ("hendel", "fv", *FIELD, "shift")
    assert VectorsConfig(methods="shift").method_objects() == (MeanShift(),)
    with pytest.raises(ConfigError, match="already registered"):
        registry.register_extraction_method(MeanShift)
    # `tvlens vectors --methods shift` is parsed (the model then fails to load: no such folder)
    args = ["vectors", "--model", "/no/such", "--out", str(tmp_path / "out"), "--methods"]
    bad = CliRunner().invoke(app, [*args, "nope"])
    assert bad.exit_code == 2 and "Unknown methods 'nope'" in bad.output
    ok = CliRunner().invoke(app, [*args, "hendel,shift"])
    assert "Unknown methods" not in ok.output and "/no/such" in ok.output, ok.output
    # its own option, from the command line, with no edit to the config or the CLI
    assert VectorsConfig(
        methods="shift", method_options={"shift": {"alpha": 2.0}}
    ).method_objects() == (MeanShift(alpha=2.0),)
    opts = ["--method-options"]
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    args = ["vectors", "--model", str(empty), "--out", str(tmp_path / "o2"), "--methods", "shift"]
    bad = CliRunner().invoke(app, [*args, *opts, '{"shift": {"beta": 1}}'])
    assert bad.exit_code != 0 and "shift has no option ['beta']" in bad.output, bad.output
    ok = CliRunner().invoke(app, [*args, *opts, '{"shift": {"alpha": 2}}'])
    assert "no option" not in ok.output and "not_a_model" in ok.output, ok.output


def test_an_entry_point_registers_a_method(MeanShift, registry, monkeypatch):
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "EntryShift", MeanShift, raising=False)
    ep = EntryPoint("shift", f"{__name__}:EntryShift", R.ENTRY_POINT_GROUP)
    monkeypatch.setattr(R, "entry_points", lambda group: [ep] if group == ep.group else [])
    monkeypatch.setattr(R, "_entry_points_loaded", False)
    assert R.get_extraction_method("shift") is MeanShift
    assert "shift" in R.extraction_choices()
    # a broken plugin is left out with a warning naming it; tvlens still runs
    broken = EntryPoint("gone", f"{__name__}:NoSuchClass", R.ENTRY_POINT_GROUP)
    monkeypatch.setattr(R, "entry_points", lambda group: [broken])
    monkeypatch.setattr(R, "_entry_points_loaded", False)
    with pytest.warns(UserWarning, match="'gone'.*was not registered"):
        assert "gone" not in R.extraction_choices()


def test_report_config_is_json(MeanShift, model, suite, tmp_path):
    from tvlens.injection import save_report

    rep = evaluate_task_vectors(model, suite.select(["letters"]), methods=[MeanShift()], k=K,
                                n_extract=4, progress=False)  # fmt: skip
    data = json.loads(save_report(rep, tmp_path).read_text())
    assert data["config"]["options"] == {"shift": {"alpha": 1.0}}
    assert (tmp_path / "vectors" / "shift" / "letters.safetensors").is_file()


# ---------------------------------------------------------------------- the field's methods
# Small options: two calibration epochs, two LTV steps, two strengths (seconds on CPU).
SMALL = {"icv": {"alphas": [0.1, 1.0]}, "i2cl": {"epochs": 2},
         "ltv": {"steps": 2, "batch_size": 2}}  # fmt: skip


def test_the_field_methods_are_registered_with_their_modules_defaults():
    from tvlens.extraction import icv, state_vector
    from tvlens.extraction.methods import I2CL, ICV, LTV, StateVector

    assert R.extraction_choices()[:7] == ("hendel", "fv", *FIELD, "all")
    assert [R.get_extraction_method(n) for n in FIELD] == [ICV, I2CL, StateVector, LTV]
    # the light classes' defaults are the heavy modules' constants
    assert ICV().alphas == icv.ALPHAS
    assert StateVector().inner_window == state_vector.INNER_WINDOW
    assert StateVector().momentum_weights == state_vector.MOMENTUM_WEIGHTS
    # options from JSON (lists) make the same objects as tuples; options() is JSON
    cfg = VectorsConfig(methods="icv,i2cl", method_options=SMALL)
    assert cfg.method_objects() == (ICV(alphas=(0.1, 1.0)), I2CL(epochs=2))
    assert json.loads(json.dumps(I2CL().options())) == I2CL().options()
    with pytest.raises(ConfigError, match="pair must be"):
        ICV(pair="both")
    with pytest.raises(ConfigError, match=r"k \(--k\) must be >= 2 for icv"):
        VectorsConfig(methods="hendel,icv", k=1)


@pytest.fixture(scope="module")
def every_method(model, suite):
    rep = evaluate_task_vectors(model, suite, methods="all", method_options=SMALL, k=K,
                                n_extract=4, progress=False)  # fmt: skip
    return rep


def test_every_registered_method_gets_a_row(every_method, model, suite):
    """``methods="all"``: each method extracts, chooses on dev (its grid) and is scored on
    test; the choice made is the first best on dev and is recorded."""
    rep = every_method
    names = ("hendel", "fv", *FIELD)
    assert rep.config["methods"] == list(names)
    assert rep.config["options"]["i2cl"]["epochs"] == 2
    grids = {"icv": [{"alpha": 0.1}, {"alpha": 1.0}], "i2cl": [{}], "ltv": [{}],
             "state_vector": [{"layer": x} for x in range(model.n_layers)]}  # fmt: skip
    for t in rep.tasks.values():
        assert list(t.methods) == list(names)
        for name, m in t.methods.items():
            assert 0.0 <= m.task_vector <= 1.0, name
            assert all(0.0 <= a <= 1.0 for a in m.dev_by_layer + m.test_by_layer), name
            grid = grids.get(name, [{"layer": x} for x in range(model.n_layers)])
            assert len(m.dev_by_layer) == len(m.test_by_layer) == len(grid), name
            best = m.dev_by_layer.index(max(m.dev_by_layer))
            assert m.task_vector == m.test_by_layer[best], name
            choice = grid[best]
            assert m.best_layer == choice.get("layer", -1), name
            assert m.chosen == ({} if set(choice) <= {"layer"} else choice), name
    for name in names:  # one [n_layers, d_model] summary per method and task
        for task in suite.names:
            tv = rep.vectors[name][task]
            assert tv.method == name and tv.d_model == model.d_model, name
    icv_tv = rep.vectors["icv"]["letters"]
    assert icv_tv.info["chosen"] == rep.tasks["letters"].methods["icv"].chosen
    assert len(rep.vectors["i2cl"]["letters"].info["coef"]) == model.n_layers


def test_every_method_report_saves_and_loads_back(every_method, suite, tmp_path):
    from tvlens.extraction import TaskVector
    from tvlens.injection import save_report
    from tvlens.injection.evaluate import VectorReport
    from tvlens.plotting import plot_layer_sweep

    path = save_report(every_method, tmp_path)
    back = VectorReport.load(path)
    assert back.to_dict() == every_method.to_dict()
    for name, by_task in every_method.vectors.items():
        for task, tv in by_task.items():
            saved = TaskVector.load(tmp_path / "vectors" / name / f"{task}.safetensors")
            torch.testing.assert_close(saved.vectors, tv.vectors.float())
            assert saved.info == json.loads(json.dumps(tv.info)), name
    # the tables: the layer chosen on dev where there is one
    from tvlens.experiments.pretrained import vector_markdown
    from tvlens.injection.evaluate import summary_table

    row = summary_table(back)[0]
    sv = back.tasks["letters"].methods["state_vector"]
    assert (
        row["i2cl_layer"] == row["icv_layer"] == "all"
        and row["state_vector_layer"] == sv.best_layer
    )
    rows = [{"suite": "s", "task": t, "n_test": 1, "zero_shot": 0.0, "icl": 0.0,
             **{m: r.task_vector for m, r in res.methods.items()},
             **{f"{m}_layer": r.best_layer for m, r in res.methods.items()}}
            for t, res in back.tasks.items()]  # vector_table's rows  # fmt: skip
    line = vector_markdown(rows, ["state_vector", "icv"], {"n_tasks": 2, "zero_shot": 0.0,
                           "icl": 0.0, "state_vector": 0.0, "icv": 0.0})  # fmt: skip
    assert f"{sv.task_vector:.2f} ({sv.best_layer}) |" in line and "(-1)" not in line
    # the layer figure: a curve per layer-choosing method, a flat line for the others
    fig = plot_layer_sweep(back)
    lines = {tr.name: tr for tr in fig.data}
    i2cl = lines[every_method.config["labels"]["i2cl"]]
    assert len(set(i2cl.y)) == 1 and i2cl.line.dash == "dashdot"
    assert len(lines[every_method.config["labels"]["state_vector"]].y) == 3


def test_methods_that_write_nothing_score_zero_shot(model, suite):
    """A known answer: ICV at α = 0 and I2CL with coefficients (context 0, keep 1) and no
    calibration leave the model as it is, so they score exactly zero-shot."""
    from tvlens.extraction.methods import I2CL, ICV

    rep = evaluate_task_vectors(model, suite, methods=[ICV(alphas=(0.0,)),
                                I2CL(epochs=0, init=(0.0, 1.0))], k=K, progress=False)  # fmt: skip
    for t in rep.tasks.values():
        assert t.methods["icv"].test_by_layer == [t.zero_shot]
        assert t.methods["i2cl"].test_by_layer == [t.zero_shot]
        assert t.methods["icv"].chosen == {"alpha": 0.0}


def test_ltv_train_k_defaults_to_the_official_5_within_the_split(model):
    from tvlens.extraction.ltv import PAPER
    from tvlens.extraction.methods import LTV

    words = ("a", "b", "c", "d", "e", "f", "g", "h", "x", "y")
    big = Task.from_pairs("next", [(w, words[(i + 1) % 10]) for i, w in enumerate(words)])
    small = Task.from_pairs("few", [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")])
    for task, want in ((big, PAPER["train_k"]), (small, 3)):
        ex = LTV(steps=1, batch_size=1).extract(model, task, k=2, n_extract=1, seed=0,
                                                template=None)  # fmt: skip
        assert ex.extras["result"].info["train_k"] == want == ex.vector.info["train_k"]
