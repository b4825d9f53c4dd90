"""Statistics of method comparisons: a hierarchical bootstrap over tasks, queries and seeds,
equivalence by two one-sided tests (TOST), the minimal detectable difference (MDD) of a
design, and one function that turns intervals into verdict words.

Why hierarchical: with few tasks and few queries per task, tasks dominate the variance of a
mean over tasks (DESIGN.md §8: for ATV - ICL the SD of per-task differences was 0.21, 0.18 of
it between tasks). Resampling queries with the tasks held fixed answers "would another draw of
queries from *these* tasks give the same mean?", not "would another draw of tasks?", and its
intervals came out 2-3x too narrow. The nested (multi-stage) bootstrap resamples the top level
first and the lower levels within each draw (Davison & Hinkley 1997, §3.8; Field & Welsh 2007).
Resampling both tasks and queries counts the query noise twice (in the spread of the drawn task
means and in the drawn queries): its variance is about ``(s_task^2 + 2 s_query^2 / n) / T``,
conservative by up to sqrt(2) in width when tasks do not differ, close to exact when tasks
dominate. ``levels=("task",)`` (tasks only, queries kept) is the less conservative choice.

Why TOST: an interval that contains 0 is absence of evidence, not evidence of equality.
"Equal" is claimed only when the (1 - 2 alpha) interval lies inside a margin declared before
looking (Schuirmann 1987; Lakens 2017).

Records are per-query rows ``(task, query, seed, method, value)``: a ``pandas.DataFrame`` with
those columns, or a sequence of mappings or 5-tuples. ``seed`` is ``None`` (or NaN) for methods
with no training seed (zero-shot, ICL, a fixed vector); ``value`` is a per-query score (1.0 /
0.0 for a correct / wrong answer, or any real number such as a KL divergence).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from tvlens.errors import TVLensError

LEVELS = ("task", "query", "seed")
COLUMNS = ("task", "query", "seed", "method", "value")
_NO_SEED = "-"  # the seed label of a method that has none
# Draws per vectorised chunk (~16 MB of indices).
_CHUNK_CELLS = 2_000_000


class StatsError(TVLensError, ValueError):
    """Records or options that the statistics cannot use (missing rows, unpaired seeds...)."""


# ---------------------------------------------------------------------------- records


def as_frame(records: pd.DataFrame | Iterable[Mapping[str, Any] | Sequence[Any]]) -> pd.DataFrame:
    """Records as a DataFrame with the columns ``task, query, seed, method, value``; the seed
    of a method without one becomes ``"-"``."""
    if isinstance(records, pd.DataFrame):
        frame = records
    else:
        rows = list(records)
        if rows and not isinstance(rows[0], Mapping):
            frame = pd.DataFrame(rows, columns=list(COLUMNS))
        else:
            frame = pd.DataFrame(rows)
    if "seed" not in frame.columns:
        frame = frame.assign(seed=None)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise StatsError(
            f"Records need the columns {list(COLUMNS)}; missing {missing}. Give one row per "
            "task, query, seed and method (seed None for methods without one)."
        )
    if frame.empty:
        raise StatsError("No records: give one row per task, query, seed and method.")
    frame = frame[list(COLUMNS)].copy()
    frame["seed"] = [_NO_SEED if _is_missing(s) else s for s in frame["seed"]]
    frame["value"] = frame["value"].astype(float)
    if not np.isfinite(frame["value"].to_numpy()).all():
        bad = frame[~np.isfinite(frame["value"].to_numpy())].iloc[0]
        raise StatsError(
            f"A value is not finite ({bad['value']} for method {bad['method']!r}, task "
            f"{bad['task']!r}, query {bad['query']!r}): drop or fix it before resampling."
        )
    return frame


def _is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and bool(np.isnan(x)))


def _by_seed(frame: pd.DataFrame, method: str) -> pd.DataFrame:
    """One method's values: rows (task, query), one column per seed, sorted."""
    sub = frame[frame["method"] == method]
    if sub.empty:
        known = sorted(frame["method"].unique().tolist())
        raise StatsError(f"No records for method {method!r}; the records have {known}.")
    dup = sub.duplicated(["task", "query", "seed"])
    if dup.any():
        row = sub[dup].iloc[0]
        raise StatsError(
            f"Method {method!r} has two values for task {row['task']!r}, query "
            f"{row['query']!r}, seed {row['seed']!r}: give one row per task, query and seed."
        )
    wide = sub.set_index(["task", "query", "seed"])["value"].unstack("seed").sort_index()
    if wide.isna().any().any():
        (task, query), seed = next(
            (idx, col) for idx, row in wide.iterrows() for col, v in row.items() if np.isnan(v)
        )
        raise StatsError(
            f"Method {method!r} has no value for task {task!r}, query {query!r}, seed "
            f"{seed!r} although other queries have that seed: every query needs every seed."
        )
    return wide


def _paired(frame: pd.DataFrame, method: str, baseline: str) -> pd.DataFrame:
    """``method - baseline`` per (task, query) and seed, paired on the same task, query and
    seed. A method without seeds is paired with every seed of the other; two trained methods
    are paired by seed label when their labels are the same, else by sorted position."""
    a, b = _by_seed(frame, method), _by_seed(frame, baseline)
    if not a.index.equals(b.index):
        only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
        raise StatsError(
            f"{method!r} and {baseline!r} are not scored on the same queries ({len(only_a)} "
            f"(task, query) pairs only in {method!r}, {len(only_b)} only in {baseline!r}, e.g. "
            f"{(list(only_a) + list(only_b))[0]}): a paired comparison needs the same queries."
        )
    na, nb = a.shape[1], b.shape[1]
    if na == nb and list(a.columns) == list(b.columns):
        return a - b
    if na == nb:
        return pd.DataFrame(a.to_numpy() - b.to_numpy(), index=a.index, columns=range(na))
    if nb == 1:
        return a.sub(b.iloc[:, 0], axis=0)
    if na == 1:
        return (-b).add(a.iloc[:, 0], axis=0)
    raise StatsError(
        f"{method!r} has {na} seeds and {baseline!r} {nb}: a paired comparison needs the same "
        "number of seeds, or a method without seeds on one side."
    )


@dataclass(frozen=True)
class Cube:
    """Values ``[task, query, seed]``, queries padded to the largest task (``n_queries[t]``
    are real)."""

    values: np.ndarray
    n_queries: np.ndarray
    tasks: tuple[str, ...]

    @classmethod
    def from_wide(cls, wide: pd.DataFrame) -> Cube:
        tasks = tuple(dict.fromkeys(wide.index.get_level_values(0)))
        counts = wide.groupby(level=0, sort=False).size()
        nq = np.array([counts[t] for t in tasks], dtype=np.int64)
        vals = np.zeros((len(tasks), int(nq.max()), wide.shape[1]))
        for i, t in enumerate(tasks):
            vals[i, : nq[i]] = wide.loc[t].to_numpy(dtype=float)
        return cls(vals, nq, tuple(str(t) for t in tasks))

    def task_means(self) -> np.ndarray:
        """Mean over seeds, then queries, per task."""
        per_query = self.values.mean(-1)
        mask = np.arange(self.values.shape[1]) < self.n_queries[:, None]
        return (per_query * mask).sum(-1) / self.n_queries

    def estimate(self) -> float:
        """The point estimate: the mean over tasks of the per-task means (tasks weighted
        equally, as a table's "mean over tasks" row)."""
        return float(self.task_means().mean())


# ---------------------------------------------------------------------------- bootstrap


def _check_levels(levels: Sequence[str]) -> tuple[str, ...]:
    levels = tuple(levels)
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise StatsError(f"levels must be a non-empty subset of {LEVELS}, got {levels}.")
    return levels


def resample_means(
    cube: Cube,
    levels: Sequence[str] = LEVELS,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> np.ndarray:
    """``n_resamples`` bootstrap replicates of :meth:`Cube.estimate`, vectorised.

    Each replicate draws (for the levels named): the tasks with replacement; for each drawn
    task as many of its queries as it has, with replacement; and the seeds, once for the
    whole replicate (a seed is one training run, shared by every task and query). A level
    left out is held fixed. Replicates are drawn in chunks, so memory stays ~50 MB.
    """
    levels = _check_levels(levels)
    if n_resamples < 1:
        raise StatsError(f"n_resamples must be >= 1, got {n_resamples}.")
    rng = np.random.default_rng(seed)
    vals, nq = cube.values, cube.n_queries
    n_tasks, q_max, n_seeds = vals.shape
    ragged = bool((nq != q_max).any())
    draw_seeds = "seed" in levels and n_seeds > 1
    # Per seed, a flat [task * query] array with one 0 after it: indices of the padded
    # queries of a ragged design point there. Small arrays keep the gathers in cache, which
    # is what makes 10,000 replicates of 17 x 100 x 3 take well under a second.
    per_seed = vals.transpose(2, 0, 1).reshape(n_seeds, -1) if draw_seeds else vals.mean(-1)[None]
    per_seed = [np.append(row, 0.0) for row in per_seed.reshape(per_seed.shape[0], -1)]
    pad = n_tasks * q_max
    out = np.empty(n_resamples)
    chunk = max(1, _CHUNK_CELLS // (n_tasks * q_max))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        if "task" in levels:
            tidx = rng.integers(0, n_tasks, size=(b, n_tasks))
        else:
            tidx = np.broadcast_to(np.arange(n_tasks), (b, n_tasks))
        n = nq[tidx]  # [b, T]: each drawn task keeps its own number of queries
        if "query" in levels:
            if ragged:
                # floor(u * n / 2^32) for a uniform 32-bit u: uniform on 0..n-1 up to n / 2^32
                # (Lemire 2019), and several times faster than integers() with an array bound.
                u = rng.integers(0, 2**32, size=(b, n_tasks, q_max), dtype=np.uint32)
                qidx = ((u * n[..., None].astype(np.uint64)) >> np.uint64(32)).astype(np.int64)
            else:
                qidx = rng.integers(0, q_max, size=(b, n_tasks, q_max), dtype=np.int32)
        else:
            qidx = np.broadcast_to(np.arange(q_max), (b, n_tasks, q_max))
        lin = tidx[..., None] * q_max + qidx  # [b, T, Q] into the flat arrays
        if ragged:
            lin = np.where(np.arange(q_max) < n[..., None], lin, pad)
        sums = np.stack([np.take(row, lin).sum(-1) for row in per_seed], -1)  # [b, T, S']
        if draw_seeds:
            w = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=b) / n_seeds
            task_means = np.einsum("bts,bs->bt", sums, w) / n
        else:
            task_means = sums[..., 0] / n
        out[start : start + b] = task_means.mean(-1)
    return out


@dataclass(frozen=True)
class BootstrapResult:
    """A mean (or a paired difference of means) and its bootstrap replicates.

    ``interval(level)`` is the percentile interval; the same replicates give the 95% interval
    of a better/worse test and the 90% interval of TOST, so the two never disagree by seed.
    """

    method: str
    baseline: str | None
    estimate: float
    samples: np.ndarray = field(repr=False)
    levels: tuple[str, ...]
    tasks: tuple[str, ...]
    task_means: tuple[float, ...]
    n_queries: tuple[int, ...]
    n_seeds: int
    seed: int

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def n_resamples(self) -> int:
        return len(self.samples)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        if not 0 < level < 1:
            raise StatsError(f"level must be in (0, 1), got {level}.")
        lo, hi = np.quantile(self.samples, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    @property
    def low(self) -> float:
        return self.interval(0.95)[0]

    @property
    def high(self) -> float:
        return self.interval(0.95)[1]

    @property
    def task_sd(self) -> float:
        """SD over tasks of the per-task means (0 with one task)."""
        return float(np.std(self.task_means, ddof=1)) if self.n_tasks > 1 else 0.0

    def mdd(self, alpha: float = 0.05, power: float = 0.8) -> float:
        """The minimal detectable difference of this design: :func:`minimal_detectable_difference`
        with the SD of the observed per-task means (which already carries the query noise of
        this many queries per task) and this many tasks."""
        return minimal_detectable_difference(self.task_sd, self.n_tasks, alpha=alpha, power=power)

    def to_dict(self) -> dict:
        lo95, hi95 = self.interval(0.95)
        lo90, hi90 = self.interval(0.90)
        return {
            "method": self.method,
            "baseline": self.baseline,
            "estimate": self.estimate,
            "ci95": [lo95, hi95],
            "ci90": [lo90, hi90],
            "levels": list(self.levels),
            "n_resamples": self.n_resamples,
            "n_tasks": self.n_tasks,
            "n_queries": list(self.n_queries),
            "n_seeds": self.n_seeds,
            "seed": self.seed,
            "task_means": dict(zip(self.tasks, self.task_means, strict=True)),
        }


def hierarchical_bootstrap(
    records: pd.DataFrame | Iterable[Mapping[str, Any] | Sequence[Any]],
    method: str,
    baseline: str | None = None,
    *,
    levels: Sequence[str] = LEVELS,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> BootstrapResult:
    """Bootstrap of ``method``'s mean score, or of ``method - baseline`` paired on the same
    task, query and seed draw.

    Args:
        records: Per-query rows ``(task, query, seed, method, value)`` (see the module doc).
        method: The method whose mean (or difference) is resampled.
        baseline: If given, the paired difference ``method - baseline``.
        levels: What is resampled: ``("task", "query", "seed")`` (default: tasks, then
            queries within each drawn task, then seeds); ``("query",)`` is the old
            query-only bootstrap with tasks fixed.
        n_resamples: Replicates (10,000 by default; a 95% percentile bound then moves by
            about 0.002 between bootstrap seeds on 0/1 scores).
        seed: Seed of the resampling (the result is the same for the same seed).

    The point estimate is the mean over tasks of each task's mean over queries of the mean
    over seeds (tasks weighted equally).
    """
    frame = as_frame(records)
    wide = _by_seed(frame, method) if baseline is None else _paired(frame, method, baseline)
    cube = Cube.from_wide(wide)
    samples = resample_means(cube, levels, n_resamples, seed)
    return BootstrapResult(
        method=method,
        baseline=baseline,
        estimate=cube.estimate(),
        samples=samples,
        levels=_check_levels(levels),
        tasks=cube.tasks,
        task_means=tuple(float(x) for x in cube.task_means()),
        n_queries=tuple(int(n) for n in cube.n_queries),
        n_seeds=int(cube.values.shape[-1]),
        seed=seed,
    )


def bootstrap_diffs(
    diffs: Sequence[float] | np.ndarray, n_resamples: int = 10_000, seed: int = 0
) -> BootstrapResult:
    """A one-level bootstrap of the mean of independent paired differences (one per unit)."""
    d = np.asarray(diffs, dtype=float).reshape(-1)
    if d.size == 0 or not np.isfinite(d).all():
        raise StatsError("diffs must be a non-empty list of finite numbers.")
    cube = Cube(d[:, None, None], np.ones(d.size, dtype=np.int64), tuple(map(str, range(d.size))))
    return BootstrapResult("diff", None, float(d.mean()), resample_means(cube, ("task",),
                           n_resamples, seed), ("unit",), cube.tasks, tuple(d.tolist()),
                           tuple([1] * d.size), 1, seed)  # fmt: skip


# ---------------------------------------------------------------------------- TOST and MDD


@dataclass(frozen=True)
class TostResult:
    """Two one-sided tests at ``alpha`` each: equal iff the ``1 - 2 alpha`` interval lies
    inside ``[-margin, +margin]``."""

    equal: bool
    estimate: float
    low: float
    high: float
    margin: float
    alpha: float

    @property
    def level(self) -> float:
        return 1 - 2 * self.alpha


def _check_margin(margin: float) -> float:
    if not (isinstance(margin, int | float) and np.isfinite(margin) and margin > 0):
        raise StatsError(
            f"The equivalence margin must be a positive number declared before the run "
            f"(e.g. 0.05 accuracy), got {margin!r}."
        )
    return float(margin)


def _check_alpha(alpha: float) -> float:
    if not 0 < alpha < 0.5:
        raise StatsError(f"alpha must be in (0, 0.5), got {alpha}.")
    return float(alpha)


def tost(
    data: BootstrapResult
    | Sequence[float]
    | np.ndarray
    | pd.DataFrame
    | Iterable[Mapping[str, Any] | Sequence[Any]],
    margin: float,
    alpha: float = 0.05,
    *,
    method: str | None = None,
    baseline: str | None = None,
    **bootstrap: Any,
) -> TostResult:
    """Equivalence of two methods by TOST on the bootstrap's ``1 - 2 alpha`` (90%) interval.

    ``data``: a paired :class:`BootstrapResult`; or records with ``method=`` and
    ``baseline=`` (then :func:`hierarchical_bootstrap` with ``**bootstrap`` options); or a
    flat array of paired differences (then :func:`bootstrap_diffs`).
    """
    margin, alpha = _check_margin(margin), _check_alpha(alpha)
    if isinstance(data, BootstrapResult):
        res = data
    elif isinstance(data, np.ndarray) or (
        isinstance(data, Sequence) and data and isinstance(data[0], int | float)
    ):
        res = bootstrap_diffs(data, **bootstrap)
    else:
        if method is None or baseline is None:
            raise StatsError("tost on records needs method= and baseline= (the pair compared).")
        res = hierarchical_bootstrap(data, method, baseline, **bootstrap)
    lo, hi = res.interval(1 - 2 * alpha)
    return TostResult(-margin <= lo and hi <= margin, res.estimate, lo, hi, margin, alpha)


def minimal_detectable_difference(
    task_sd: float,
    n_tasks: int,
    n_queries: int | None = None,
    query_sd: float = 0.0,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """The smallest true difference a two-sided test at ``alpha`` detects with ``power``:
    ``(z_{1-alpha/2} + z_power) * SE`` with ``SE^2 = task_sd^2 / n_tasks +
    query_sd^2 / (n_tasks * n_queries)`` (normal approximation; 2.80 * SE at the defaults).

    ``task_sd`` is the SD of per-task mean differences. Given the SD of the *observed* task
    means (which already carries the noise of their queries), leave ``query_sd`` at 0; given
    the between-task SD of true means, pass the within-task SD of per-query differences as
    ``query_sd`` with ``n_queries``. Example: task SD 0.21 over 12 tasks gives 0.17.
    """
    if n_tasks < 1 or (n_queries is not None and n_queries < 1):
        raise StatsError(f"n_tasks and n_queries must be >= 1, got {n_tasks}, {n_queries}.")
    if task_sd < 0 or query_sd < 0:
        raise StatsError(f"SDs must be >= 0, got task_sd={task_sd}, query_sd={query_sd}.")
    if query_sd > 0 and n_queries is None:
        raise StatsError("query_sd needs n_queries (queries per task).")
    if not 0 < power < 1:
        raise StatsError(f"power must be in (0, 1), got {power}.")
    alpha = _check_alpha(alpha)
    var = task_sd**2 / n_tasks + (query_sd**2 / (n_tasks * n_queries) if query_sd else 0.0)
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return float(z * np.sqrt(var))


# ---------------------------------------------------------------------------- verdicts


def verdict_word(
    ci: tuple[float, float], ci_tost: tuple[float, float] | None = None, margin: float | None = None
) -> str:
    """The verdict from intervals alone: ``"better"`` if the ``1 - alpha`` interval ``ci`` of
    ``method - baseline`` is above 0, ``"worse"`` if below, else ``"equal"`` if the
    ``1 - 2 alpha`` interval ``ci_tost`` lies inside ``[-margin, +margin]``, else
    ``"inconclusive"``."""
    lo, hi = ci
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    if margin is not None and ci_tost is not None:
        margin = _check_margin(margin)
        if -margin <= ci_tost[0] and ci_tost[1] <= margin:
            return "equal"
    return "inconclusive"


def _num(x: float) -> str:
    return f"{x:+.3f}"


@dataclass(frozen=True)
class Verdict:
    """What one comparison supports, with the numbers (see :func:`verdict`)."""

    word: str  # "better" | "worse" | "equal" | "inconclusive"
    method: str
    baseline: str
    estimate: float
    ci: tuple[float, float]  # 1 - alpha (95%)
    ci_tost: tuple[float, float]  # 1 - 2 alpha (90%)
    alpha: float
    margin: float | None
    mdd: float
    power: float
    n_tasks: int
    n_queries: int  # total over tasks
    n_seeds: int
    n_resamples: int
    levels: tuple[str, ...]

    @property
    def label(self) -> str:
        """``better``, ``worse``, ``equal (TOST, margin m)`` or ``inconclusive``."""
        return f"equal (TOST, margin {self.margin:g})" if self.word == "equal" else self.word

    @property
    def within_margin(self) -> bool | None:
        """Whether the TOST interval is inside the margin (also for better / worse)."""
        if self.margin is None:
            return None
        return -self.margin <= self.ci_tost[0] and self.ci_tost[1] <= self.margin

    def text(self) -> str:
        """One line for a report, e.g. ``ATV vs ICL-5: +0.041, 95% [-0.030, +0.240]:
        inconclusive (MDD 0.170 at 80% power; 17 tasks, 1700 queries, 3 seeds; tasks >
        queries > seeds resampled 10,000 times)``."""
        lvl = round(100 * (1 - self.alpha))
        out = f"{self.method} vs {self.baseline}: {_num(self.estimate)}, {lvl}% "
        out += f"[{_num(self.ci[0])}, {_num(self.ci[1])}]: {self.label}"
        if self.margin is not None:
            tl = round(100 * (1 - 2 * self.alpha))
            inside = "inside" if self.within_margin else "not inside"
            out += f"; {tl}% [{_num(self.ci_tost[0])}, {_num(self.ci_tost[1])}] {inside} "
            out += f"+/-{self.margin:g}"
        seeds = f", {self.n_seeds} seeds" if self.n_seeds > 1 else ""
        out += (
            f" (MDD {self.mdd:.3f} at {round(100 * self.power)}% power; {self.n_tasks} tasks, "
            f"{self.n_queries} queries{seeds}; {' > '.join(self.levels)} resampled "
            f"{self.n_resamples:,} times)"
        )
        return out

    def to_dict(self) -> dict:
        return {
            "word": self.word,
            "label": self.label,
            "text": self.text(),
            "method": self.method,
            "baseline": self.baseline,
            "estimate": self.estimate,
            "ci": list(self.ci),
            "ci_tost": list(self.ci_tost),
            "alpha": self.alpha,
            "margin": self.margin,
            "within_margin": self.within_margin,
            "mdd": self.mdd,
            "power": self.power,
            "n_tasks": self.n_tasks,
            "n_queries": self.n_queries,
            "n_seeds": self.n_seeds,
            "n_resamples": self.n_resamples,
            "levels": list(self.levels),
        }


def verdict(
    result: BootstrapResult,
    margin: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> Verdict:
    """The verdict on a paired difference (``hierarchical_bootstrap(records, method,
    baseline)``): ``better`` / ``worse`` when the ``1 - alpha`` interval excludes 0; else
    ``equal`` by TOST when ``margin`` is declared and the ``1 - 2 alpha`` interval lies within
    it; else ``inconclusive``. The design's MDD is computed alongside. Reports print
    :meth:`Verdict.text`, never hand-written words."""
    if result.baseline is None:
        raise StatsError(
            f"A verdict compares two methods: bootstrap {result.method!r} with baseline=... "
            "(the paired difference), not its mean alone."
        )
    alpha = _check_alpha(alpha)
    ci, ci_tost = result.interval(1 - alpha), result.interval(1 - 2 * alpha)
    return Verdict(
        word=verdict_word(ci, ci_tost, margin),
        method=result.method,
        baseline=result.baseline,
        estimate=result.estimate,
        ci=ci,
        ci_tost=ci_tost,
        alpha=alpha,
        margin=None if margin is None else _check_margin(margin),
        mdd=result.mdd(alpha, power),
        power=power,
        n_tasks=result.n_tasks,
        n_queries=int(sum(result.n_queries)),
        n_seeds=result.n_seeds,
        n_resamples=result.n_resamples,
        levels=result.levels,
    )


def compare(
    records: pd.DataFrame | Iterable[Mapping[str, Any] | Sequence[Any]],
    pairs: Sequence[tuple[str, str]],
    margin: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    **bootstrap: Any,
) -> list[Verdict]:
    """:func:`verdict` for each ``(method, baseline)`` of ``pairs`` on the same records,
    each bootstrapped with the same options (``levels``, ``n_resamples``, ``seed``)."""
    frame = as_frame(records)
    return [
        verdict(hierarchical_bootstrap(frame, m, b, **bootstrap), margin, alpha, power)
        for m, b in pairs
    ]


def verdict_table(verdicts: Sequence[Verdict]) -> str:
    """A markdown table of verdicts (for a README or results page: generated, not written)."""
    lines = [
        "| comparison | difference | 95% interval | 90% interval | verdict | MDD | tasks | queries "
        "| seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        ci = f"[{_num(v.ci[0])}, {_num(v.ci[1])}]"
        ct = f"[{_num(v.ci_tost[0])}, {_num(v.ci_tost[1])}]"
        lines.append(
            f"| {v.method} vs {v.baseline} | {_num(v.estimate)} | {ci} | {ct} | {v.label} | "
            f"{v.mdd:.3f} | {v.n_tasks} | {v.n_queries} | {v.n_seeds} |"
        )
    return "\n".join(lines) + "\n"
