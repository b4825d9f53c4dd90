"""The unseen split's input-overlap check beyond exact strings: lowercased and word by word,
on the shipped function-vector files, stored in the data summary and the overlap outputs."""

import csv
import io

import pytest

from tvlens.compare.data import input_overlap, load_compare_data
from tvlens.compare.report import format_overlap
from tvlens.compare.run import get_compare_preset
from tvlens.errors import TVLensError
from tvlens.tasks.core import Example, Task


def _task(name, inputs):
    return Task(name, tuple(Example(x, x) for x in inputs))


def test_overlap_modes_on_small_tasks():
    a = _task("a", ["Whose", "play, gray", "zap zap"])
    b = _task("b", ["WHOSE", "gray, play", "zap"])
    assert input_overlap(a, b, "exact") == 0.0
    assert input_overlap(a, b, "lower") == pytest.approx(1 / 3)  # only "whose"
    assert input_overlap(a, b, "words") == 1.0  # every word of a is a word of b
    assert input_overlap(b, _task("c", ["play"]), "words") == 0.0
    with pytest.raises(TVLensError, match="exact"):
        input_overlap(a, b, "fuzzy")


@pytest.fixture(scope="module")
def fv_data():
    """Siblings from the shipped function-vector files as in-domain / unseen tasks."""
    cfg = get_compare_preset("tiny").with_overrides(
        in_domain=["fv/capitalize_first_letter", "fv/choose_first_of_3", "fv/antonym"],
        unseen=["fv/lowercase_first_letter", "fv/choose_middle_of_3"],
        instructions="fv", max_input_chars=40, n_train=4, n_dev=2, n_test=4,
    )  # fmt: skip
    return load_compare_data(cfg, "qa")


def test_siblings_overlap_once_case_and_order_are_ignored(fv_data):
    d = fv_data.describe()
    low, words = d["input_overlap_lower"], d["input_overlap_words"]
    u, c = "lowercase_first_letter", "capitalize_first_letter"
    assert d["input_overlap"][u][c] == 0.0  # exact strings: "WITTY" is not "witty"
    assert low[u][c] > 0.99 and words[u][c] > 0.99  # the same words once case is ignored
    m, f = "choose_middle_of_3", "choose_first_of_3"
    assert low[m][f] < 0.05 < 0.8 < words[m][f]  # other lists of the same words
    # between in-domain tasks too, and a different task overlaps little
    assert set(low[c]) == {"choose_first_of_3", "antonym"}
    assert words[c]["antonym"] < 0.5


def test_overlap_outputs_carry_every_mode(fv_data):
    table, md = format_overlap(fv_data)
    rows = list(csv.DictReader(io.StringIO(table)))
    row = next(r for r in rows if r["task"] == "lowercase_first_letter")
    assert float(row["capitalize_first_letter"]) == 0.0
    assert float(row["lower:capitalize_first_letter"]) > 0.99
    assert "max overlap, words" in md and "| lowercase_first_letter | unseen | 0% |" in md
