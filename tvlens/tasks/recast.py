"""Tasks recast into another answer format.

:func:`multiple_choice` turns any (input, output) task into a multiple-choice task with letter
answers, the format of ``commonsense_qa`` in the function-vector files (``question\\na:
option\\nb: option ...`` -> ``b``). ATV's unseen tasks (Kang et al. 2025: BBQ, AQuA, MMLU, BBH)
share this format with its in-domain ones; recasting word tasks into it lets a comparison test
whether a method carries an answer format to a new task, with the task still readable from the
query alone (the options say what is asked).
"""

from __future__ import annotations

import numpy as np

from tvlens.errors import ConfigError, EmptyTaskError
from tvlens.tasks.core import Example, Task

LETTERS = "abcdefgh"
MC_PREFIX = "mc_"  # a recast task's name: mc_<source task>


def multiple_choice(task: Task, n_options: int = 4, seed: int = 0) -> Task:
    """``task`` as multiple choice: each input followed by ``n_options`` lettered options, the
    gold output and ``n_options - 1`` distractors drawn (seeded per example) from the task's
    other outputs (never equal to the gold one after lowercasing); the output is the gold
    option's letter, placed uniformly at random. Named ``mc_<task>``."""
    if not 2 <= n_options <= len(LETTERS):
        raise ConfigError(f"n_options must be in 2..{len(LETTERS)}, got {n_options}.")
    outputs = sorted({ex.output for ex in task.examples})
    if len({o.strip().lower() for o in outputs}) < n_options:
        raise EmptyTaskError(
            f"Task {task.name!r} has {len(outputs)} distinct outputs; a {n_options}-option "
            "recast needs at least that many: ask for fewer options."
        )
    examples = []
    for i, ex in enumerate(task.examples):
        rng = np.random.default_rng([seed, i])
        gold = ex.output.strip().lower()
        pool = [o for o in outputs if o.strip().lower() != gold]
        picked: list[str] = []
        for j in rng.permutation(len(pool)):  # distinct after lowercasing too
            if all(pool[j].strip().lower() != p.strip().lower() for p in picked):
                picked.append(pool[j])
            if len(picked) == n_options - 1:
                break
        at = int(rng.integers(n_options))
        options = picked[:at] + [ex.output] + picked[at:]
        lines = "\n".join(f"{LETTERS[k]}: {o}" for k, o in enumerate(options))
        examples.append(Example(f"{ex.input}\n{lines}", LETTERS[at]))
    return Task(
        f"{MC_PREFIX}{task.name}",
        tuple(examples),
        family=task.family,
        description=f"{task.name} as {n_options}-option multiple choice (letter answers)",
    )
