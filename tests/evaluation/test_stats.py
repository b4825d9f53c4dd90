"""Hierarchical bootstrap, TOST, MDD and verdicts on synthetic records with known answers."""

import time

import numpy as np
import pandas as pd
import pytest

from tvlens.evaluation.stats import (
    StatsError,
    Verdict,
    as_frame,
    bootstrap_diffs,
    compare,
    hierarchical_bootstrap,
    minimal_detectable_difference,
    tost,
    verdict,
    verdict_table,
    verdict_word,
)


def records(
    n_tasks=12,
    n_queries=16,
    seeds=(0, 1, 2),
    task_sd=0.0,
    query_sd=0.0,
    seed_sd=0.0,
    shift=0.0,
    rng_seed=0,
    baseline_seeds=(None,),
):
    """``atv`` = ``icl`` + shift + task effect + query noise + seed noise (real numbers)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for t in range(n_tasks):
        t_eff = rng.normal(0, task_sd)
        for q in range(n_queries):
            base = rng.normal(0.5, 0.1)
            q_eff = rng.normal(0, query_sd)
            for s in baseline_seeds:
                rows.append((f"t{t}", q, s, "icl", base))
            for s in seeds:
                rows.append((f"t{t}", q, s, "atv", base + shift + t_eff + q_eff
                             + rng.normal(0, seed_sd)))  # fmt: skip
    return pd.DataFrame(rows, columns=["task", "query", "seed", "method", "value"])


def width(res, level=0.95):
    lo, hi = res.interval(level)
    return hi - lo


def test_constant_difference_gives_zero_width_interval():
    res = hierarchical_bootstrap(records(shift=0.1), "atv", "icl", n_resamples=2000)
    assert res.estimate == pytest.approx(0.1)
    lo, hi = res.interval()
    assert lo == pytest.approx(0.1, abs=1e-12) and hi == pytest.approx(0.1, abs=1e-12)


def test_task_variance_widens_the_interval_against_a_query_only_bootstrap():
    # Tasks differ a lot, queries within a task not at all: the query-only bootstrap (tasks
    # fixed, the old scheme) sees no noise; the hierarchical one sees the tasks' spread.
    df = records(task_sd=0.2, query_sd=0.0, shift=0.05)
    full = hierarchical_bootstrap(df, "atv", "icl", n_resamples=4000)
    query_only = hierarchical_bootstrap(df, "atv", "icl", levels=("query",), n_resamples=4000)
    assert width(query_only) < 1e-12
    # SE of a mean of 12 task effects of SD 0.2 is ~0.058: a 95% interval ~0.2 wide.
    assert 0.1 < width(full) < 0.4
    task_sd = np.std(full.task_means, ddof=1)
    assert width(full) == pytest.approx(2 * 1.96 * task_sd / np.sqrt(12), rel=0.25)


def test_query_noise_alone_is_counted_at_most_twice():
    # Tasks that do not differ: the two-stage bootstrap sees the query noise once through the
    # spread of the drawn task means and once through the drawn queries, so its variance is
    # about twice the query-only one (width ratio ~sqrt(2): conservative, never narrower).
    df = records(task_sd=0.0, query_sd=0.3, seeds=(None,))
    full = hierarchical_bootstrap(df, "atv", "icl", n_resamples=4000)
    query_only = hierarchical_bootstrap(df, "atv", "icl", levels=("query",), n_resamples=4000)
    assert 1.0 < width(full) / width(query_only) < 1.6


def test_seed_level_resamples_training_runs():
    df = records(seed_sd=0.3, seeds=(0, 1, 2, 3, 4))
    with_seeds = hierarchical_bootstrap(df, "atv", "icl", n_resamples=3000)
    without = hierarchical_bootstrap(df, "atv", "icl", levels=("task", "query"), n_resamples=3000)
    seeds_only = hierarchical_bootstrap(df, "atv", "icl", levels=("seed",), n_resamples=3000)
    # Per-query seed noise averages out over 192 queries unless seeds are drawn per run.
    assert width(seeds_only) > 0
    assert width(with_seeds) >= width(without)


def test_reproducible_with_a_seed_and_different_with_another():
    df = records(task_sd=0.1, query_sd=0.2)
    a = hierarchical_bootstrap(df, "atv", "icl", n_resamples=1000, seed=3)
    b = hierarchical_bootstrap(df.sample(frac=1, random_state=1), "atv", "icl",
                               n_resamples=1000, seed=3)  # fmt: skip
    c = hierarchical_bootstrap(df, "atv", "icl", n_resamples=1000, seed=4)
    np.testing.assert_array_equal(a.samples, b.samples)  # row order does not matter
    assert not np.array_equal(a.samples, c.samples)


def test_interval_covers_a_known_mean_and_ragged_tasks():
    # 0/1 scores with p = 0.7 in every task; tasks have 10..40 queries.
    rng = np.random.default_rng(1)
    rows = [(f"t{t}", q, None, "icl", float(rng.random() < 0.7))
            for t in range(15) for q in range(10 + 2 * t)]  # fmt: skip
    res = hierarchical_bootstrap(rows, "icl")
    lo, hi = res.interval()
    assert lo < 0.7 < hi and 0.08 < hi - lo < 0.16
    assert dict(zip(res.tasks, res.n_queries, strict=True)) == {
        f"t{t}": 10 + 2 * t for t in range(15)
    }
    assert res.estimate == pytest.approx(np.mean(res.task_means))
    # Queries are drawn uniformly within each task (the bootstrap mean is the estimate).
    assert res.samples.mean() == pytest.approx(res.estimate, abs=0.002)
    skewed = [("a", q, None, "m", 9.0 if q == 2 else 0.0) for q in range(3)]
    skewed += [("b", q, None, "m", 0.0) for q in range(7)]
    res = hierarchical_bootstrap(skewed, "m", levels=("query",), n_resamples=20_000)
    assert res.samples.mean() == pytest.approx(1.5, abs=0.03)  # (9 / 3 + 0) / 2


def test_tost_equal_for_identical_methods_and_not_when_shift_exceeds_margin():
    same = records(task_sd=0.0, query_sd=0.1, shift=0.0)
    out = tost(same, margin=0.05, method="atv", baseline="icl", n_resamples=2000)
    assert out.equal and out.level == pytest.approx(0.9)
    shifted = records(task_sd=0.02, query_sd=0.1, shift=0.1)
    res = hierarchical_bootstrap(shifted, "atv", "icl", n_resamples=2000)
    out = tost(res, margin=0.05)
    assert not out.equal and out.low > 0.05
    # A flat array of paired differences.
    assert tost(np.zeros(50), margin=0.01).equal
    assert not tost(np.full(50, 0.02), margin=0.01).equal


def test_tost_needs_a_positive_margin():
    with pytest.raises(StatsError, match="margin"):
        tost(np.zeros(5), margin=0.0)


def test_mdd_known_value_and_monotone():
    # The example: task SD 0.21 over 12 tasks -> about 0.17.
    assert minimal_detectable_difference(0.21, 12) == pytest.approx(0.17, abs=0.005)
    by_tasks = [minimal_detectable_difference(0.2, n, 16, 0.4) for n in (3, 5, 12, 17, 50)]
    by_queries = [minimal_detectable_difference(0.2, 12, n, 0.4) for n in (4, 16, 100)]
    assert all(a > b for a, b in zip(by_tasks, by_tasks[1:], strict=False))
    assert all(a > b for a, b in zip(by_queries, by_queries[1:], strict=False))
    # Higher power or a smaller alpha needs a larger difference.
    assert minimal_detectable_difference(0.2, 12, power=0.9) > minimal_detectable_difference(
        0.2, 12
    )
    assert minimal_detectable_difference(0.2, 12, alpha=0.01) > minimal_detectable_difference(
        0.2, 12
    )


def test_verdict_words_from_intervals():
    assert verdict_word((0.01, 0.2)) == "better"
    assert verdict_word((-0.2, -0.01)) == "worse"
    assert verdict_word((-0.02, 0.03), (-0.01, 0.02), margin=0.05) == "equal"
    assert verdict_word((-0.02, 0.03), (-0.01, 0.06), margin=0.05) == "inconclusive"
    assert verdict_word((-0.02, 0.03)) == "inconclusive"


def test_verdict_on_bootstrap_results():
    better = verdict(hierarchical_bootstrap(records(shift=0.1, query_sd=0.05), "atv", "icl",
                                            n_resamples=2000), margin=0.05)  # fmt: skip
    assert isinstance(better, Verdict) and better.word == "better"
    assert better.within_margin is False
    equal = verdict(hierarchical_bootstrap(records(query_sd=0.05), "atv", "icl",
                                           n_resamples=2000), margin=0.05)  # fmt: skip
    assert equal.word == "equal" and equal.label == "equal (TOST, margin 0.05)"
    text = equal.text()
    assert "equal (TOST, margin 0.05)" in text and "MDD" in text and "12 tasks" in text
    noisy = verdict(hierarchical_bootstrap(records(task_sd=0.3, n_tasks=5), "atv", "icl",
                                           n_resamples=2000), margin=0.05)  # fmt: skip
    assert noisy.word == "inconclusive" and noisy.mdd > 0.2
    d = noisy.to_dict()
    assert d["word"] == "inconclusive" and d["text"] == noisy.text()
    with pytest.raises(StatsError, match="baseline"):
        verdict(hierarchical_bootstrap(records(), "atv", n_resamples=10))


def test_pairing_rules_and_bad_records():
    df = records(seeds=(0, 1), baseline_seeds=(5, 6))  # trained vs trained, other labels
    res = hierarchical_bootstrap(df, "atv", "icl", n_resamples=100)
    assert res.n_seeds == 2
    with pytest.raises(StatsError, match="same number of seeds"):
        hierarchical_bootstrap(records(seeds=(0, 1), baseline_seeds=(5, 6, 7)), "atv", "icl")
    with pytest.raises(StatsError, match="not scored on the same queries"):
        hierarchical_bootstrap(df[~((df.method == "icl") & (df["query"] == 0))], "atv", "icl")
    with pytest.raises(StatsError, match="no value"):
        hierarchical_bootstrap(df.drop(index=df.index[df.method == "atv"][0]), "atv")
    with pytest.raises(StatsError, match="two values"):
        hierarchical_bootstrap(pd.concat([df, df.iloc[:1]]), "atv", "icl")
    with pytest.raises(StatsError, match="No records for method 'lora'"):
        hierarchical_bootstrap(df, "lora")
    with pytest.raises(StatsError, match="columns"):
        as_frame([{"task": "a", "value": 1.0}])
    with pytest.raises(StatsError, match="levels"):
        hierarchical_bootstrap(df, "atv", levels=("prompt",))


def test_bootstrap_diffs_matches_mean():
    res = bootstrap_diffs([0.1, 0.2, 0.3, 0.4], n_resamples=500)
    assert res.estimate == pytest.approx(0.25)
    lo, hi = res.interval()
    assert 0.1 <= lo < 0.25 < hi <= 0.4


def test_ten_thousand_resamples_of_a_realistic_shape_are_fast():
    df = records(n_tasks=17, n_queries=100, seeds=(0, 1, 2), task_sd=0.1, query_sd=0.3)
    frame = as_frame(df)
    start = time.perf_counter()
    res = hierarchical_bootstrap(frame, "atv", "icl", n_resamples=10_000)
    elapsed = time.perf_counter() - start
    assert res.n_resamples == 10_000
    assert elapsed < 3.0  # < 1 s on an idle core; generous for a shared 2-core machine


def test_compare_and_verdict_table():
    df = records(shift=0.1, query_sd=0.05)
    df = pd.concat([df, df[df.method == "icl"].assign(method="icl16")])
    out = compare(df, [("atv", "icl"), ("icl16", "icl")], margin=0.05, n_resamples=500)
    assert [v.word for v in out] == ["better", "equal"]
    table = verdict_table(out)
    assert table.count("\n") == 4 and f"| atv vs icl | {out[0].estimate:+.3f} |" in table
    assert "equal (TOST, margin 0.05)" in table
