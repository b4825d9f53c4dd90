"""Every result type: save / load round trips, to_dataframe, .plot(), and plot functions that
take result objects."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from tvlens.errors import TVLensError
from tvlens.tasks import Task, TaskSuite

NEXT = "a b c d e f g h x y a".split()


@pytest.fixture(scope="module")
def model(make_tiny, letters_tokenizer):
    # The plain tiny gpt2 (``tiny``'s): under "sharp-gpt2" it would take the place of the
    # sharpened model that the patching tests ask for by that name, when this file runs first.
    return make_tiny("gpt2", "gpt2", letters_tokenizer).model


@pytest.fixture(scope="module")
def suite():
    forward = Task.from_pairs("next", list(zip(NEXT[:-1], NEXT[1:], strict=True)))
    back = Task.from_pairs("prev", list(zip(NEXT[1:], NEXT[:-1], strict=True)))
    return TaskSuite("letters", (forward, back))


def _equal(a, b) -> None:
    """Field by field, tensors and arrays by value (NaN equal to NaN)."""
    assert type(a) is type(b)
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _equal(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, atol=0, rtol=0, equal_nan=True)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _equal(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _equal(x, y)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


def _round_trip(result, tmp_path):
    path = result.save(tmp_path / f"{type(result).__name__}.json")
    back = type(result).load(path)
    _equal(result, back)
    assert isinstance(result.to_dataframe(), pd.DataFrame)
    assert isinstance(back.plot(), go.Figure)
    assert len(back.plot().data) > 0
    assert str(result).strip() and str(back) == str(result)  # print(result): the CLI's text
    return back


def test_computed_results_round_trip_and_plot(model, suite, tmp_path):
    from tvlens.evaluation.icl import evaluate_icl
    from tvlens.injection.evaluate import evaluate_task_vectors
    from tvlens.patching import run_patching
    from tvlens.plotting import plot_td_by_layer
    from tvlens.probing import td_by_layer
    from tvlens.probing.series import TDSeries

    ev = evaluate_icl(model, suite, k=2, n_prompts=4)
    _round_trip(ev, tmp_path)
    td = td_by_layer(model, suite, k=2, n_prompts=6)
    _round_trip(td, tmp_path)
    fig = plot_td_by_layer(td)  # one model's LayerTD, not a series dict
    assert [list(t.y) for t in fig.data] == [td.td]
    series = TDSeries("m", ["a", "b"], [1, 2], [td, td], [ev.first_token()] * 2)
    _round_trip(series, tmp_path)
    assert isinstance(series.plot("heatmap"), go.Figure)
    with pytest.raises(TVLensError, match="kind must be one of"):
        series.plot("pie")
    report = evaluate_task_vectors(
        model, suite, k=2, n_extract=4, top_k_heads=2, progress=False, seed=1
    )
    back = _round_trip(report, tmp_path)
    assert back.vectors.keys() == report.vectors.keys()
    for table in report.heads.values():
        _round_trip(table, tmp_path)
    run = run_patching(model, None, suite, k=2, n_prompts=1, component="resid", progress=False)
    _round_trip(run, tmp_path)
    _round_trip(run.exact or run.attribution, tmp_path)


def test_built_results_round_trip_and_plot(tmp_path):
    from tvlens.compare.methods import MethodResult
    from tvlens.evaluation.icl import ICLEvaluation, TaskAccuracy
    from tvlens.experiments.finetune import FinetuneResult, FinetuneRow
    from tvlens.plotting import plot_method_comparison, plot_perturbation
    from tvlens.probing.emergence import EmergenceResult
    from tvlens.probing.perturbation import PerturbationResult

    ev = ICLEvaluation(
        k=3, template="arrow", tasks={"t": TaskAccuracy("t", 0.5, 0.25, 4),
                                      "u": TaskAccuracy("u", 1.0, 1.0, 4)},
    )  # fmt: skip
    assert str(ev).splitlines() == [
        f"{'t':24s} first-token 0.500  exact 0.250  (n=4)",
        f"{'u':24s} first-token 1.000  exact 1.000  (n=4)",
        f"{'mean':24s} first-token 0.750  exact 0.625",
    ]
    mr = MethodResult("icl", ev, 0, 0.0, 1.5)
    _round_trip(mr, tmp_path)
    assert list(mr.to_dataframe()["method"]) == ["icl", "icl"]
    assert len(plot_method_comparison([mr, MethodResult("zs", ev, 0, 0.0, 1.0)]).data) == 2
    rows = [
        FinetuneRow("first", [0], 2.0, 1.0, 0.1, 0.9, 0.3, 0.8, [0.3, 0.2], [0.8, 0.5], 1.0),
        FinetuneRow("last", [1], 2.0, 1.5, 0.1, None, 0.3, 0.4, [0.3, 0.2], [0.4, 0.3], 1.0),
    ]
    ft = _round_trip(FinetuneResult("token", 1, rows, {"steps": 3}), tmp_path)
    assert list(ft.to_dataframe()["which"]) == ["first", "last"]
    pert = PerturbationResult(
        "token", ["a", "b"], 1, "replace", 10, [1.0, 2.0], [[0.0, 0.5], [0.25, 0.0]],
        None, None, float("nan"),
    )  # fmt: skip
    _round_trip(pert, tmp_path)
    assert len(plot_perturbation(pert).data) == 1
    em = EmergenceResult(
        "token", ["a", "b"], [1, 2], [0, 1], [[0.5, 0.6], [0.7, 0.9]],
        [[{"a": 0.5, "b": 0.5}] * 2, [{"a": 0.7, "b": 0.9}] * 2],
        [{"a": 2.0, "b": 2.0}, {"a": 1.0, "b": 0.5}], [{"a": 0.1, "b": 0.2}, {"a": 0.9, "b": 1.0}],
    )  # fmt: skip
    _round_trip(em, tmp_path)


def test_load_refuses_other_files(tmp_path):
    from tvlens.evaluation.icl import ICLEvaluation, TaskAccuracy
    from tvlens.probing.layers import LayerTD

    (tmp_path / "plain.json").write_text('{"a": 1}')
    with pytest.raises(TVLensError, match="not written by a result's save"):
        LayerTD.load(tmp_path / "plain.json")
    ev = ICLEvaluation(k=1, template="arrow", tasks={"t": TaskAccuracy("t", 1.0, 1.0, 1)})
    path = ev.save(tmp_path / "ev.json")
    with pytest.raises(TVLensError, match="holds a ICLEvaluation, not a LayerTD"):
        LayerTD.load(path)
    with pytest.raises(TVLensError, match="No result file"):
        LayerTD.load(tmp_path / "none.json")


def test_compare_exports_the_loop_and_the_run():
    import importlib

    importlib.import_module("tvlens.compare.run")
    from tvlens.compare import compare_methods, run_compare
    from tvlens.compare.methods import compare as loop
    from tvlens.compare.run import run_compare as run

    assert compare_methods is loop and run_compare is run


def test_long_calls_show_a_progress_bar_unless_silenced(model, suite, capsys):
    from tvlens.evaluation.icl import evaluate_icl
    from tvlens.extraction.function_vectors import function_vector
    from tvlens.probing import td_by_layer

    calls = {
        "ICL accuracy": lambda p: evaluate_icl(model, suite, k=2, n_prompts=2, progress=p),
        "TD by layer": lambda p: td_by_layer(model, suite, k=2, n_prompts=6, progress=p),
        "patch heads": lambda p: function_vector(
            model, suite["next"], k=2, n_prompts=2, top_k_heads=2, progress=p
        ),
    }
    for desc, call in calls.items():
        capsys.readouterr()
        call(False)
        assert desc not in capsys.readouterr().err
        call(True)  # the default
        assert desc in capsys.readouterr().err


def test_a_result_saved_before_its_module_moved_loads(tmp_path):
    """ICL accuracy moved from tvlens/icl_accuracy.py to tvlens/evaluation/icl.py: a result
    saved before names the old module, and still loads."""
    from tvlens.evaluation.icl import ICLEvaluation, TaskAccuracy

    ev = ICLEvaluation(k=3, template="arrow", tasks={"t": TaskAccuracy("t", 0.5, 0.25, 4)})
    path = ev.save(tmp_path / "ev.json")
    text = path.read_text()
    assert "tvlens.evaluation.icl:ICLEvaluation" in text
    path.write_text(text.replace("tvlens.evaluation.icl:", "tvlens.icl_accuracy:"))
    _equal(ev, ICLEvaluation.load(path))


def test_results_saved_under_moved_or_renamed_types_still_load(tmp_path):
    """The comparison left tvlens/atv/ and the task-vector report's per-method record was
    renamed (issue 30): results saved before load as the new types."""
    import json
    from pathlib import Path

    from tvlens.compare.distill import DistillResult
    from tvlens.injection.evaluate import VectorMethodResult
    from tvlens.results import decode

    # a distillation result the first version of the test wrote (its run folder is gone)
    saved = Path(__file__).resolve().parent / "data/distill_r1_saved_under_tvlens_atv.json"
    assert '"tvlens.atv.distill:DistillResult"' in saved.read_text()  # written before the move
    res = DistillResult.load(saved)
    assert isinstance(res, DistillResult) and res.rank == 1
    old = {"__dataclass__": "tvlens.injection.evaluate:MethodResult",
           "fields": {"method": "fv", "best_layer": 1, "task_vector": 0.5, "recovered": 0.5,
                      "dev_by_layer": [0.1], "test_by_layer": [0.5]}}  # fmt: skip
    got = decode(json.loads(json.dumps(old)))
    assert isinstance(got, VectorMethodResult) and got.best_layer == 1 and got.chosen == {}


def test_a_demo_result_saved_before_the_demo_became_a_package_loads():
    """demo.py became the package tvlens/demo/ (issue 30): a DemoResult saved under the old
    module path (``tvlens.demo:DemoResult``) loads as the one in tvlens.demo.report."""
    import json
    from pathlib import Path

    from tvlens.demo.report import DemoResult
    from tvlens.results import decode, encode

    res = DemoResult(Path("run"), Path("fig"), summary={"preset": "tiny"})
    saved = encode(res)
    assert saved["__dataclass__"] == "tvlens.demo.report:DemoResult"
    saved["__dataclass__"] = "tvlens.demo:DemoResult"  # as written before the move
    got = decode(json.loads(json.dumps(saved)))
    assert type(got) is DemoResult and got.run_dir == Path("run") and got.summary == res.summary
