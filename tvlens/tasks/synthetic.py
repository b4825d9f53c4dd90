"""Synthetic task families, generated from a seed.

- latent mapping: each task is a random permutation of a symbol vocabulary;
  the model must infer *which* permutation from the demonstrations.
- bitwise: AND, NAND, OR, NOR, XOR, XNOR on two n-bit binary numbers (Han et al. 2025).
- list: first, last and copy of a list of symbols.
- Null: random answers, the reference class for task decodability.

Symbols are written ``s0, s1, ...`` and binary numbers as one word (``01101``), so that a
word-level tokenizer (what tvlens trains its own models with) gives single-token answers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np

from tvlens.errors import EmptyTaskError, UnknownTaskError
from tvlens.tasks.core import Task, TaskSuite

BITWISE_OPS: dict[str, callable] = {
    "and": lambda a, b: a & b,
    "nand": lambda a, b: ~(a & b),
    "or": lambda a, b: a | b,
    "nor": lambda a, b: ~(a | b),
    "xor": lambda a, b: a ^ b,
    "xnor": lambda a, b: ~(a ^ b),
}
LIST_OPS = ("first", "last", "copy")


def symbols(n: int) -> list[str]:
    """The symbol vocabulary ``s0 .. s{n-1}``."""
    if n < 2:
        raise ValueError(f"Need at least 2 symbols, got {n}.")
    return [f"s{i}" for i in range(n)]


def latent_mapping_suite(n_tasks: int = 8, n_symbols: int = 32, seed: int = 0) -> TaskSuite:
    """``n_tasks`` tasks, each a random permutation of ``n_symbols`` symbols.

    Task ``latent_i`` maps ``s_j`` to ``s_{perm_i(j)}``; every task covers every symbol once.
    """
    if n_tasks < 1:
        raise EmptyTaskError(f"n_tasks must be >= 1, got {n_tasks}.")
    syms = symbols(n_symbols)
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(n_tasks):
        perm = rng.permutation(n_symbols)
        tasks.append(
            Task.from_pairs(
                f"latent_{i}",
                [(syms[j], syms[perm[j]]) for j in range(n_symbols)],
                family="latent",
                description=f"random permutation {i} of {n_symbols} symbols (seed {seed})",
            )
        )
    return TaskSuite(
        "latent",
        tuple(tasks),
        description="latent-mapping tasks: random permutations of a symbol vocabulary",
        spec={"name": "latent", "n_tasks": n_tasks, "n_symbols": n_symbols, "seed": seed},
    )


def _bits(x: int, n: int) -> str:
    return format(x & ((1 << n) - 1), f"0{n}b")


def bitwise_suite(
    n_bits: int = 5, ops: Iterable[str] = tuple(BITWISE_OPS), seed: int = 0
) -> TaskSuite:
    """Bitwise operations on two ``n_bits``-bit numbers: input ``"01101 10010"``.

    Every ordered pair of numbers is one example (``4**n_bits`` per task), in an order
    shuffled by ``seed``.
    """
    ops = tuple(ops)
    unknown = [o for o in ops if o not in BITWISE_OPS]
    if unknown:
        raise UnknownTaskError(f"Unknown bitwise ops {unknown}; choose from {list(BITWISE_OPS)}.")
    if not 1 <= n_bits <= 8:
        raise ValueError(f"n_bits must be in 1..8, got {n_bits}.")
    rng = np.random.default_rng(seed)
    pairs = list(itertools.product(range(2**n_bits), repeat=2))
    order = rng.permutation(len(pairs))
    tasks = []
    for op in ops:
        f = BITWISE_OPS[op]
        tasks.append(
            Task.from_pairs(
                op,
                [
                    (f"{_bits(a, n_bits)} {_bits(b, n_bits)}", _bits(f(a, b), n_bits))
                    for a, b in (pairs[i] for i in order)
                ],
                family="bitwise",
                description=f"{op.upper()} of two {n_bits}-bit numbers",
            )
        )
    return TaskSuite(
        "bitwise",
        tuple(tasks),
        description=f"bitwise operations on two {n_bits}-bit numbers",
        spec={"name": "bitwise", "n_bits": n_bits, "ops": list(ops), "seed": seed},
    )


def list_suite(
    n_symbols: int = 32,
    min_len: int = 2,
    max_len: int = 4,
    n_examples: int = 256,
    ops: Iterable[str] = LIST_OPS,
    seed: int = 0,
) -> TaskSuite:
    """First / last / copy of random symbol lists of length ``min_len..max_len``.

    The same ``n_examples`` lists are used for every op; ``copy`` has multi-token answers.
    """
    ops = tuple(ops)
    unknown = [o for o in ops if o not in LIST_OPS]
    if unknown:
        raise UnknownTaskError(f"Unknown list ops {unknown}; choose from {list(LIST_OPS)}.")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"Need 1 <= min_len <= max_len, got {min_len}, {max_len}.")
    syms = symbols(n_symbols)
    rng = np.random.default_rng(seed)
    lists: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    # Distinct lists so that no query repeats a demonstration verbatim.
    for _ in range(n_examples * 20):
        if len(lists) == n_examples:
            break
        length = int(rng.integers(min_len, max_len + 1))
        items = tuple(syms[i] for i in rng.choice(n_symbols, size=length, replace=False))
        if items not in seen:
            seen.add(items)
            lists.append(list(items))
    fn = {"first": lambda xs: xs[0], "last": lambda xs: xs[-1], "copy": " ".join}
    tasks = [
        Task.from_pairs(
            op,
            [(" ".join(xs), fn[op](xs)) for xs in lists],
            family="list",
            description=f"{op} of a list of symbols",
        )
        for op in ops
    ]
    return TaskSuite(
        "lists",
        tuple(tasks),
        description="list tasks: first, last, copy",
        spec={
            "name": "lists",
            "n_symbols": n_symbols,
            "min_len": min_len,
            "max_len": max_len,
            "n_examples": n_examples,
            "ops": list(ops),
            "seed": seed,
        },
    )


def null_task(like: Task | TaskSuite, name: str = "null") -> Task:
    """The Null task for a task (or suite): the same inputs, answers drawn at random.

    Outputs are re-drawn from the pooled outputs every time a prompt is built
    (``random_outputs=True``), so the demonstrations define no task.
    """
    tasks = list(like.tasks) if isinstance(like, TaskSuite) else [like]
    inputs = [ex.input for t in tasks for ex in t.examples]
    outputs = [ex.output for t in tasks for ex in t.examples]
    # Stable, de-duplicated inputs; outputs paired round-robin (they are re-drawn anyway).
    uniq = list(dict.fromkeys(inputs))
    pool = list(dict.fromkeys(outputs))
    pairs = [(x, pool[i % len(pool)]) for i, x in enumerate(uniq)]
    return Task.from_pairs(
        name,
        pairs,
        family="null",
        random_outputs=True,
        description="Null task: random answers (no consistent input-output mapping)",
    )


def synthetic_vocabulary(
    n_symbols: int = 32, n_bits: int = 5, extra_words: Iterable[str] = ()
) -> list[str]:
    """Every word the synthetic families can produce: symbols, n-bit numbers, extras."""
    words = symbols(n_symbols) + [_bits(i, n_bits) for i in range(2**n_bits)]
    return list(dict.fromkeys([*words, *extra_words]))
