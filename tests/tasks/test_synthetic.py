"""Generated task families (latent, bitwise, list, null), the word suite, and the registry."""

import pytest

from tvlens.tasks import (
    TaskSuite,
    available_suites,
    bitwise_suite,
    get_suite,
    latent_mapping_suite,
    list_suite,
    null_task,
    synthetic_vocabulary,
    word_suite,
)


def test_latent_tasks_are_permutations():
    suite = latent_mapping_suite(n_tasks=4, n_symbols=10, seed=0)
    symbols = [f"s{i}" for i in range(10)]
    assert suite.names == ["latent_0", "latent_1", "latent_2", "latent_3"]
    for task in suite:
        assert task.family == "latent"
        assert task.inputs == symbols
        assert sorted(task.outputs, key=lambda s: int(s[1:])) == symbols  # each output once
    # Different tasks of a suite are different permutations.
    assert len({tuple(t.outputs) for t in suite}) == 4
    assert latent_mapping_suite(4, 10, seed=0) == suite
    other = latent_mapping_suite(4, 10, seed=1)
    assert [t.outputs for t in other] != [t.outputs for t in suite]
    assert suite.spec == {"name": "latent", "n_tasks": 4, "n_symbols": 10, "seed": 0}


# a = 01101, b = 10011, worked out bit by bit.
BITWISE_CASES = {
    "and": "00001",
    "nand": "11110",
    "or": "11111",
    "nor": "00000",
    "xor": "11110",
    "xnor": "00001",
}
# a = 11000, b = 01010.
BITWISE_CASES_2 = {
    "and": "01000",
    "nand": "10111",
    "or": "11010",
    "nor": "00101",
    "xor": "10010",
    "xnor": "01101",
}


def test_bitwise_hand_checked():
    suite = bitwise_suite(n_bits=5)
    assert suite.names == ["and", "nand", "or", "nor", "xor", "xnor"]
    for op, task in zip(suite.names, suite, strict=True):
        assert len(task) == 4**5 == len(set(task.inputs))
        table = dict(zip(task.inputs, task.outputs, strict=True))
        assert table["01101 10011"] == BITWISE_CASES[op], op
        assert table["11000 01010"] == BITWISE_CASES_2[op], op
        assert table["00000 00000"] == ("11111" if op in ("nand", "nor", "xnor") else "00000")
        assert all(len(o) == 5 and set(o) <= {"0", "1"} for o in task.outputs)
    # Every op lists the pairs in the same seeded order.
    assert len({tuple(t.inputs) for t in suite}) == 1
    assert bitwise_suite(5, seed=1)["and"].inputs != suite["and"].inputs


def test_bitwise_subset_and_small():
    suite = bitwise_suite(n_bits=2, ops=["xor"])
    assert suite.names == ["xor"]
    table = dict(zip(suite["xor"].inputs, suite["xor"].outputs, strict=True))
    assert table == {f"{a:02b} {b:02b}": f"{a ^ b:02b}" for a in range(4) for b in range(4)}


def test_list_suite_first_last_copy():
    suite = list_suite(n_symbols=8, min_len=2, max_len=4, n_examples=50, seed=0)
    assert suite.names == ["first", "last", "copy"]
    first, last, copy = suite["first"], suite["last"], suite["copy"]
    assert first.inputs == last.inputs == copy.inputs
    assert len(set(first.inputs)) == 50  # distinct lists
    for x, f, la, c in zip(first.inputs, first.outputs, last.outputs, copy.outputs, strict=True):
        items = x.split()
        assert 2 <= len(items) <= 4 and len(set(items)) == len(items)
        assert set(items) <= {f"s{i}" for i in range(8)}
        assert (f, la, c) == (items[0], items[-1], x)
    assert list_suite(8, 2, 4, 50, seed=0) == suite


def test_null_task_of_a_suite():
    suite = latent_mapping_suite(3, 8)
    null = null_task(suite, name="null")
    assert null.name == "null" and null.random_outputs and null.family == "null"
    assert null.inputs == [f"s{i}" for i in range(8)]  # de-duplicated across tasks
    assert set(null.outputs) <= set(suite["latent_0"].outputs)


def test_synthetic_vocabulary_covers_the_families():
    vocab = synthetic_vocabulary(n_symbols=8, n_bits=3, extra_words=["s1", "zzz"])
    assert len(vocab) == len(set(vocab)) == 8 + 8 + 1
    assert vocab[:3] == ["s0", "s1", "s2"] and "000" in vocab and "111" in vocab
    assert vocab[-1] == "zzz"
    words = latent_mapping_suite(2, 8).words() | bitwise_suite(3).words()
    assert words <= set(vocab)


def test_word_suite_has_six_tasks_of_fifty():
    suite = word_suite()
    assert suite.names == [
        "antonyms",
        "country_capital",
        "english_french",
        "present_past",
        "singular_plural",
        "uppercase",
    ]
    for task in suite:
        assert len(task) == 50 and task.family == "word"
        assert len(set(task.inputs)) == 50
    assert dict(zip(suite["antonyms"].inputs, suite["antonyms"].outputs, strict=True))["hot"] == (
        "cold"
    )
    upper = suite["uppercase"]
    assert all(o == i.upper() for i, o in zip(upper.inputs, upper.outputs, strict=True))
    assert word_suite(["uppercase", "antonyms"]).names == ["uppercase", "antonyms"]


def test_get_suite_by_name_and_spec():
    assert available_suites() == ["bitwise", "latent", "lists", "words"]
    assert get_suite("latent", n_tasks=2, n_symbols=8, seed=3) == latent_mapping_suite(2, 8, 3)
    for suite in (
        latent_mapping_suite(2, 8, seed=5),
        bitwise_suite(3, ops=["and", "xor"], seed=2),
        list_suite(8, 2, 3, 30, ops=["last", "copy"], seed=1),
        word_suite(["antonyms"]),
    ):
        rebuilt = get_suite(**suite.spec)
        assert rebuilt == suite and rebuilt.spec == suite.spec
    with pytest.raises(TypeError, match="Bad arguments for suite 'latent'"):
        get_suite("latent", n_symbol=3)


def test_get_suite_from_folder(tmp_path):
    suite = latent_mapping_suite(2, 8, seed=1)
    folder = suite.save(tmp_path / "my_suite")
    loaded = get_suite(str(folder))
    assert isinstance(loaded, TaskSuite) and loaded.name == "my_suite"
    assert loaded.names == suite.names
    for name in suite.names:
        assert loaded[name].examples == suite[name].examples
