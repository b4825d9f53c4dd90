"""Task and TaskSuite: JSON round trips, splits, selection."""

import json

import pytest

from tvlens.errors import EmptyTaskError, UnknownTaskError
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


def _write(path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def test_task_files_load_in_three_shapes(tmp_path):
    pairs = [("hot", "cold"), ("up", "down"), ("big", "small"), ("wet", "dry")]
    _write(tmp_path / "listed.json", [{"input": i, "output": o} for i, o in pairs])
    _write(tmp_path / "mapping.json", dict(pairs))  # Hendel et al.'s {input: output}
    _write(
        tmp_path / "split.json",  # ATV / ELICIT: named splits, each a list or an object
        {
            "train": [{"input": i, "output": o} for i, o in pairs[:2]],
            "valid": dict(pairs[2:3]),
            "test": [{"input": "wet", "output": "dry"}],
        },
    )
    listed = Task.from_json(tmp_path / "listed.json")
    mapping = Task.from_json(tmp_path / "mapping.json")
    split = Task.from_json(tmp_path / "split.json")
    want = [Example(i, o) for i, o in pairs]
    assert list(listed.examples) == list(mapping.examples) == list(split.examples) == want
    assert listed.splits == mapping.splits == {}
    # The file's own split is kept, used by split() and part(), and loadable alone.
    assert list(split.splits) == ["train", "valid", "test"]
    train, valid, test = split.split()
    assert (train.inputs, valid.inputs, test.inputs) == (["hot", "up"], ["big"], ["wet"])
    assert split.part("valid").outputs == ["small"]
    assert Task.from_json(tmp_path / "split.json", split="test").inputs == ["wet"]
    assert Task.from_json(tmp_path / "split.json", split=["test", "train"]).inputs == [
        "wet", "hot", "up",
    ]  # fmt: skip
    # A task without named splits still splits by fractions (default 0.5 / 0.25 / 0.25).
    assert [len(p) for p in listed.split()] == [2, 1, 1]
    suite = TaskSuite.load(tmp_path)
    assert suite.names == ["listed", "mapping", "split"]
    assert len(suite["split"]) == 4


def test_suite_of_split_files_loads_one_split(tmp_path):
    from tvlens.tasks.registry import get_suite

    for n in ("a", "b"):
        _write(tmp_path / f"{n}.json", {"train": {f"{n}1": "x", f"{n}2": "y"}, "test": {n: "z"}})
    suite = TaskSuite.load(tmp_path, split="test")
    assert [t.inputs for t in suite] == [["a"], ["b"]]
    rebuilt = get_suite(**suite.spec)
    assert [t.inputs for t in rebuilt] == [["a"], ["b"]]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"a": "b", "c": None}, "value of 'c' is null"),
        ({"a": ["b", "c"], "d": "e"}, r"value of 'a' is \["),  # not splits: d is an answer
        ([{"input": "a"}], "must be a JSON list of"),
        ("just text", "must be a JSON list of"),
        ({"train": [{"input": "a", "output": ["b"]}]}, "split 'train', row 0: output"),
        ([], "has no examples"),
        ({"train": [], "test": {}}, "split 'train' is empty"),  # named (issue 29)
    ],
)
def test_malformed_task_files_give_one_clear_error(tmp_path, data, match):
    from tvlens.errors import TaskFormatError, TVLensError

    _write(tmp_path / "bad.json", data)
    with pytest.raises(TVLensError, match=match) as err:
        Task.from_json(tmp_path / "bad.json")
    assert isinstance(err.value, TaskFormatError | EmptyTaskError)


def test_split_names_are_checked(tmp_path):
    from tvlens.errors import ConfigError

    _write(tmp_path / "s.json", {"train": {"a": "b"}, "test": {"c": "d"}})
    _write(tmp_path / "l.json", {"a": "b"})
    with pytest.raises(ConfigError, match="no split 'valid'; it has train, test"):
        Task.from_json(tmp_path / "s.json", split="valid")
    with pytest.raises(ConfigError, match="no named splits"):
        Task.from_json(tmp_path / "l.json", split="train")
    with pytest.raises(ConfigError, match="has no split 'dev'"):
        Task.from_json(tmp_path / "s.json").part("dev")
