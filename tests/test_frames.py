"""``to_dataframe()`` of every result object: tidy (one row per layer / head / position / task /
checkpoint), the right columns and row count, and values equal to the result's own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tvlens.evaluation.icl import ICLEvaluation, TaskAccuracy
from tvlens.extraction.function_vectors import HeadTable
from tvlens.frames import tidy
from tvlens.injection.evaluate import TaskResult, VectorMethodResult, VectorReport
from tvlens.patching.exact import PatchResult
from tvlens.probing.emergence import EmergenceResult
from tvlens.probing.layers import LayerTD
from tvlens.probing.perturbation import PerturbationResult
from tvlens.probing.series import TDSeries

GEN = torch.Generator().manual_seed(0)


def rand(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=GEN)


def test_tidy_rows_coordinates_and_errors():
    a = rand(3, 4)
    f = tidy({"v": a, "w": -a}, ("layer", "head"), {"layer": [2, 5, 7]}, {"model": "m"})
    assert list(f.columns) == ["layer", "head", "v", "w", "model"] and len(f) == 12
    assert f["layer"].dtype == np.int64 and sorted(set(f["layer"])) == [2, 5, 7]
    for row in f.itertuples():
        i = [2, 5, 7].index(row.layer)
        assert row.v == pytest.approx(float(a[i, row.head])) and row.w == -row.v
    with pytest.raises(ValueError, match="different shapes"):
        tidy({"v": a, "w": a.T}, ("layer", "head"))
    with pytest.raises(ValueError, match="coordinates"):
        tidy({"v": a}, ("layer", "head"), {"layer": [0, 1]})


@pytest.mark.parametrize(
    ("dims", "shape", "positions"),
    [(("layer",), (3,), "all"), (("layer", "pos"), (3, 5), "each"),
     (("layer", "pos", "head"), (3, 5, 2), "each"), (("layer", "head"), (3, 2), "last")],
)  # fmt: skip
def test_patch_result_frame(dims, shape, positions):
    values = rand(*shape)
    res = PatchResult(
        values, dims, "heads" if "head" in dims else "resid", positions, "exact", "p",
        clean_metric=0.9, corrupted_metric=0.2, layers=[1, 2, 3],
        pos_labels=[f"t{i}" for i in range(5)] if "pos" in dims else [],
    )  # fmt: skip
    f = res.to_dataframe()
    assert len(f) == values.numel()
    expected = (
        list(dims[:1])
        + (["pos", "pos_label"] if "pos" in dims else [])
        + list(d for d in dims[1:] if d != "pos")
    )
    assert list(f.columns[: len(expected)]) == expected
    assert {"value", "effect", "normalized", "component", "method", "metric"} <= set(f.columns)
    assert set(f["layer"]) == {1, 2, 3}
    for row in f.itertuples():
        idx = tuple([row.layer - 1] + [getattr(row, d) for d in dims[1:]])
        assert row.value == pytest.approx(float(values[idx]))
        assert row.effect == pytest.approx(float(res.effect()[idx]))
        assert row.normalized == pytest.approx(float(res.normalized()[idx]))
        if "pos" in dims:
            assert row.pos_label == f"t{row.pos}"


def layer_td(scale: float = 1.0) -> LayerTD:
    tasks = ["a", "b", "null"]
    per = [{t: scale * (i + j) / 10 for j, t in enumerate(tasks)} for i in range(3)]
    return LayerTD([0, 1, 2], [scale * 0.1, scale * 0.5, scale * 0.3], per, [0.2, 0.4, 0.1],
                   tasks=tasks)  # fmt: skip


def test_layer_td_and_series_frames():
    r = layer_td()
    f = r.to_dataframe()
    assert list(f.columns) == ["layer", "td", "separability"] and f["td"].tolist() == r.td
    f = r.to_dataframe(per_task=True)
    assert list(f.columns) == ["layer", "task", "td"] and len(f) == 9
    assert all(row.td == r.per_task[row.layer][row.task] for row in f.itertuples())

    acc = [{"a": 0.1, "b": 0.2}, {"a": 0.9, "b": 1.0}]
    s = TDSeries("m", ["step10", "step20"], [10, 20], [layer_td(1.0), layer_td(2.0)], acc)
    f = s.to_dataframe()
    assert list(f.columns) == ["revision", "step", "layer", "td"] and len(f) == 6
    table = s.table  # [layer, checkpoint]
    for row in f.itertuples():
        assert row.td == table[row.layer, [10, 20].index(row.step)]
    f = s.to_dataframe(per_task=True)
    assert list(f.columns) == ["revision", "step", "layer", "task", "td", "accuracy"]
    assert len(f) == 2 * 3 * 3
    for row in f.itertuples():
        c = [10, 20].index(row.step)
        assert row.td == s.by_checkpoint[c].per_task[row.layer][row.task]
        assert row.accuracy == acc[c][row.task] if row.task != "null" else np.isnan(row.accuracy)


@pytest.mark.parametrize("with_accuracy", [True, False])
def test_emergence_frame(with_accuracy):
    tasks, steps, layers = ["a", "b"], [5, 50, 500], [0, 1]
    rng = np.random.default_rng(0)
    per = [[{t: float(rng.random()) for t in tasks + ["null"]} for _ in layers] for _ in steps]
    loss = [{t: float(rng.random()) for t in tasks} for _ in steps]
    acc = [{t: float(rng.random()) for t in tasks} for _ in steps] if with_accuracy else None
    td = rng.random((3, 2)).tolist()
    em = EmergenceResult("tokens", tasks, steps, layers, td, per, loss, acc)
    f = em.to_dataframe()
    assert list(f.columns) == ["step", "layer", "td"] and len(f) == 6
    assert all(row.td == td[steps.index(row.step)][row.layer] for row in f.itertuples())
    f = em.to_dataframe(per_task=True)
    cols = ["step", "layer", "task", "td", "loss"] + (["accuracy"] if with_accuracy else [])
    assert list(f.columns) == cols and len(f) == 3 * 2 * 3
    for row in f.itertuples():
        c = steps.index(row.step)
        assert row.td == per[c][row.layer][row.task]
        if row.task == "null":
            assert np.isnan(row.loss)
        else:
            assert row.loss == loss[c][row.task]
            assert not with_accuracy or row.accuracy == acc[c][row.task]


def test_perturbation_frame():
    tasks = ["a", "b", "c"]
    loss = np.arange(9.0).reshape(3, 3).tolist()
    acc = (np.arange(9.0).reshape(3, 3) / 10).tolist()
    p = PerturbationResult("tokens", tasks, 1, "shift", 100, [1.0, 2.0, 3.0], loss,
                           [0.5, 0.6, 0.7], acc)  # fmt: skip
    f = p.to_dataframe()
    assert len(f) == 9
    assert list(f.columns[:2]) == ["task", "donor"]
    assert {"loss", "base_loss", "delta_loss", "delta_accuracy", "step", "layer"} <= set(f.columns)
    for row in f.itertuples():
        a, b = tasks.index(row.task), tasks.index(row.donor)
        assert row.loss == loss[a][b] and row.base_loss == p.base_loss[a]
        assert row.delta_loss == pytest.approx(p.delta_loss[a, b])
        assert row.delta_accuracy == pytest.approx(p.delta_accuracy[a, b])
    reg = PerturbationResult("regression", tasks, 1, "shift", None, [1.0] * 3, loss, None, None)
    assert "accuracy" not in reg.to_dataframe().columns


def test_vector_report_head_table_and_icl_frames():
    tasks = {}
    for i, name in enumerate(["x", "y"]):
        methods = {
            m: VectorMethodResult(m, 1, 0.5 + i / 10, 0.6, [0.1, 0.2, 0.3], [0.4, 0.5 + j, 0.6])
            for j, m in enumerate(["hendel", "fv"])
        }
        tasks[name] = TaskResult(name, 0.1 * i, 0.9, 10, 5, methods)
    rep = VectorReport({}, {}, tasks)
    f = rep.to_dataframe()
    assert len(f) == 4 and list(f.columns[:2]) == ["task", "method"]
    for row in f.itertuples():
        m = tasks[row.task].methods[row.method]
        assert (row.task_vector, row.best_layer, row.recovered) == (
            m.task_vector, m.best_layer, m.recovered,
        )  # fmt: skip
        assert row.icl == tasks[row.task].icl
    f = rep.to_dataframe(by_layer=True)
    assert list(f.columns) == ["task", "method", "layer", "dev", "test"] and len(f) == 12
    for row in f.itertuples():
        m = tasks[row.task].methods[row.method]
        assert (row.dev, row.test) == (m.dev_by_layer[row.layer], m.test_by_layer[row.layer])

    aie = rand(3, 4)
    h = HeadTable(aie, "x")
    f = h.to_dataframe()
    assert len(f) == 12 and list(f.columns) == ["layer", "head", "aie", "rank", "task"]
    assert all(row.aie == pytest.approx(float(aie[row.layer, row.head])) for row in f.itertuples())
    top = f.sort_values("rank").head(3)
    assert list(zip(top["layer"], top["head"], strict=True)) == h.top(3)

    ev = ICLEvaluation(5, "arrow", {t: TaskAccuracy(t, 0.5, 0.25, 8) for t in ("p", "q")})
    f = ev.to_dataframe()
    assert isinstance(f, pd.DataFrame) and len(f) == 2
    assert list(f.columns) == ["task", "first_token", "exact_match", "n", "k"]
    assert f.set_index("task")["first_token"].to_dict() == ev.first_token()
