"""A task recast as multiple choice (tvlens.tasks.recast): the letter points at the gold
output, the distractors are other outputs of the same task, the draw is seeded."""

from collections import Counter

import pytest

from tvlens.errors import ConfigError, EmptyTaskError
from tvlens.tasks.core import Example, Task
from tvlens.tasks.recast import LETTERS, multiple_choice


def _task(n=40, outputs=10):
    return Task("caps", tuple(Example(f"w{i}", f"Out{i % outputs}") for i in range(n)))


def _options(ex):
    lines = ex.input.split("\n")[1:]
    return {line[0]: line[3:] for line in lines}


def test_the_letter_names_the_gold_output_among_distinct_distractors():
    task = _task()
    mc = multiple_choice(task, n_options=4, seed=3)
    assert mc.name == "mc_caps" and len(mc.examples) == len(task.examples)
    for src, ex in zip(task.examples, mc.examples, strict=True):
        opts = _options(ex)
        assert ex.input.split("\n")[0] == src.input
        assert list(opts) == list(LETTERS[:4])
        assert opts[ex.output] == src.output
        lowered = [o.lower() for o in opts.values()]
        assert len(set(lowered)) == 4  # no option repeats, even after lowercasing
        assert all(o in {e.output for e in task.examples} for o in opts.values())


def test_draw_is_seeded_and_the_gold_letter_spreads_over_positions():
    task = _task(n=400)
    a, b = multiple_choice(task, seed=1), multiple_choice(task, seed=1)
    assert a == b and multiple_choice(task, seed=2) != a
    counts = Counter(ex.output for ex in a.examples)
    assert set(counts) == set(LETTERS[:4]) and min(counts.values()) > 60  # ~100 each


def test_a_case_variant_of_the_gold_output_is_never_a_distractor():
    task = Task("t", (Example("x", "Paris"), Example("y", "paris"), Example("z", "Rome"),
                      Example("u", "Oslo"), Example("v", "Bern")))  # fmt: skip
    for ex in multiple_choice(task, n_options=3, seed=0).examples:
        lowered = [o.lower() for o in _options(ex).values()]
        assert len(set(lowered)) == 3


def test_too_few_outputs_or_options_is_one_line():
    with pytest.raises(EmptyTaskError, match="distinct outputs"):
        multiple_choice(_task(outputs=3), n_options=4)
    with pytest.raises(ConfigError, match="n_options"):
        multiple_choice(_task(), n_options=1)
