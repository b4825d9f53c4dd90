"""Task and TaskSuite: JSON round trips, splits, selection."""

import json

import pytest

from tvlens.errors import UnknownTaskError
from tvlens.tasks import Example, Task, TaskSuite


@pytest.fixture
def task() -> Task:
    pairs = [(f"w{i}", f"v{i}") for i in range(20)] + [("café crème", "coffee")]
    return Task.from_pairs("words", pairs, family="word", description="test")


def test_from_pairs_and_basics(task):
    assert len(task) == 21
    assert task.examples[0] == Example("w0", "v0")
    assert task.inputs[:2] == ["w0", "w1"] and task.outputs[-1] == "coffee"
    assert list(task) == list(task.examples)
    assert {"café", "crème", "coffee", "w3", "v19"} <= task.words()
    assert len(task.words()) == 43


def test_task_json_round_trip(task, tmp_path):
    path = task.to_json(tmp_path / "sub" / "words.json")
    assert path == tmp_path / "sub" / "words.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert rows[0] == {"input": "w0", "output": "v0"}
    assert rows[-1] == {"input": "café crème", "output": "coffee"}
    assert "café" in path.read_text(encoding="utf-8")  # written as UTF-8, not \\u escapes
    loaded = Task.from_json(path, family="word", description="test")
    assert loaded == task
    assert Task.from_json(path, name="other").name == "other"
    assert Task.from_json(path).family == "custom"


def test_suite_save_load_round_trip(tmp_path):
    tasks = (
        Task.from_pairs("zeta", [("a", "b"), ("c", "d")]),
        Task.from_pairs("alpha", [("x", "y")]),
        Task.from_pairs("mid", [("1", "2"), ("3", "4"), ("5", "6")]),
    )
    suite = TaskSuite("mine", tasks)
    folder = suite.save(tmp_path / "mine")
    assert sorted(p.name for p in folder.iterdir()) == ["alpha.json", "mid.json", "zeta.json"]
    loaded = TaskSuite.load(folder)
    assert loaded.name == "mine"
    assert loaded.names == ["alpha", "mid", "zeta"]  # sorted by file name
    for t in tasks:
        assert loaded[t.name] == t
    assert TaskSuite.load(folder, name="renamed").name == "renamed"
    assert loaded.spec == {"name": str(folder)}


def test_suite_lookup_and_select():
    a = Task.from_pairs("a", [("1", "2")])
    b = Task.from_pairs("b", [("3", "4")])
    c = Task.from_pairs("c", [("5", "6")])
    suite = TaskSuite("s", (a, b))
    assert suite["b"] is b and "a" in suite and "c" not in suite
    assert suite.names == ["a", "b"] and len(suite) == 2
    assert suite.select(["b", "a"]).names == ["b", "a"]
    assert suite.with_task(c).names == ["a", "b", "c"]
    assert suite.words() == {"1", "2", "3", "4"}
    with pytest.raises(UnknownTaskError, match="No task 'c' in suite 's'. Available: a, b"):
        suite.select(["c"])
    with pytest.raises(ValueError, match="duplicate task names: \\['a'\\]"):
        TaskSuite("dup", (a, a))


def test_split_is_disjoint_and_covers(task):
    train, dev, test = task.split((0.5, 0.25, 0.25), seed=0)
    assert (len(train), len(dev), len(test)) == (10, 6, 5)  # round([.5, .75] * 21) = 10, 16
    parts = [set(p.examples) for p in (train, dev, test)]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2])
    assert parts[1].isdisjoint(parts[2])
    assert parts[0] | parts[1] | parts[2] == set(task.examples)
    for p in (train, dev, test):
        assert (p.name, p.family, p.description) == ("words", "word", "test")
    assert task.split((0.5, 0.25, 0.25), seed=0) == (train, dev, test)
    assert task.split((0.5, 0.25, 0.25), seed=1) != (train, dev, test)
    # Flags survive the split (the Null task keeps drawing random outputs).
    null = Task.from_pairs("null", [(str(i), "o") for i in range(8)], random_outputs=True)
    assert all(p.random_outputs for p in null.split((0.5, 0.5)))


def test_split_rejects_bad_fractions(task):
    with pytest.raises(ValueError, match="sum to 1"):
        task.split((0.5, 0.6))
    with pytest.raises(ValueError, match="positive"):
        task.split((1.5, -0.5))
