"""Task instructions: the shipped set covers the comparison's tasks with three training
instructions and a new held-out one each; an instructed prompt is the bare prompt opened by
the instruction line; bad instruction files are one clear line."""

import json

import pytest

from tvlens.errors import PromptError, TVLensError
from tvlens.tasks.core import Example
from tvlens.tasks.instructions import load_instructions
from tvlens.tasks.prompts import get_template
from tvlens.tasks.registry import FV_DATA_DIR


def test_shipped_instructions_cover_real_task_files():
    instr = load_instructions("fv")
    assert len(instr) == 17
    for name, ti in instr.items():
        assert len(ti.train) >= 3 and ti.heldout not in ti.train
        assert any((FV_DATA_DIR / sub / f"{name}.json").is_file()
                   for sub in ("abstractive", "extractive"))  # fmt: skip
    assert {ti.category for ti in instr.values()} >= {"knowledge", "translation", "extractive"}


def test_instructed_prompt_is_the_bare_prompt_after_one_line():
    ti = load_instructions("fv")["antonym"]
    base = get_template("qa")
    t = ti.templates(base)[0]
    demo, query = Example("hot", "cold"), Example("big", "small")
    assert t.render([demo], query) == ti.train[0] + "\n" + base.render([demo], query)
    text = "".join(s for s, _ in t.segments([demo], query))
    assert text == t.render([demo], query) + t.answer_prefix + "small"
    assert [a for _, a in t.segments([demo], query)].count(True) == 2  # demo and query answers
    assert t.bare().render([demo], query) == base.render([demo], query)
    assert ti.heldout_template(base).instruction == ti.heldout
    with pytest.raises(PromptError, match="one non-empty line"):
        base.with_instruction("two\nlines")


@pytest.mark.parametrize(
    "content, match",
    [
        ("not json", "not valid JSON"),
        ({"tasks": {}}, "no 'tasks'"),
        ({"tasks": {"a": {"train": ["x"]}}}, "need 'category'"),
        ({"tasks": {"a": {"category": "c", "train": [], "heldout": "h"}}}, "empty list"),
        ({"tasks": {"a": {"category": "c", "train": ["x"], "heldout": "x"}}}, "repeat a line"),
        ({"tasks": {"a": {"category": "c", "train": ["x\ny"], "heldout": "h"}}}, "one-line"),
    ],
)
def test_bad_instructions_are_one_line(tmp_path, content, match):
    path = tmp_path / "i.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(TVLensError, match=match) as e:
        load_instructions(path)
    assert "\n" not in str(e.value)
    with pytest.raises(TVLensError, match="shipped with tvlens") as e:
        load_instructions(tmp_path / "missing.json")
