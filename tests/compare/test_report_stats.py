"""The comparison's verdicts (tvlens.compare.report): whole-answer exact match, a hierarchical
bootstrap over tasks > queries > seeds, TOST for "equal", the MDD beside each word, held-out
instruction rows included, and the markdown sentences generated from the verdict output."""

import numpy as np
import pytest

from tvlens.compare import report
from tvlens.compare.data import load_compare_data
from tvlens.compare.registry import CLAIMS
from tvlens.compare.run import get_compare_preset
from tvlens.evaluation import stats


@pytest.fixture(scope="module")
def data():
    """The tiny preset's data (2 in-domain, 2 unseen tasks, 16 test queries each)."""
    return load_compare_data(get_compare_preset("tiny"), "arrow")


def _cells(data, acc: dict[str, float], seeds: dict[str, int], rng_seed: int = 0):
    """Cells whose exact-match rate is ``acc[method]`` (first token: always correct)."""
    rng = np.random.default_rng(rng_seed)
    out = {}
    for m, p in acc.items():
        runs = []
        for s in range(seeds.get(m, 1)):
            groups = {}
            for g, split in data.groups().items():
                n = len(split.test)
                exact = (rng.random(n) < p).astype(float).tolist()
                groups[g] = {tpl: {"exact": exact, "first": [1.0] * n}
                             for tpl in ("train", "heldout")}  # fmt: skip
            runs.append({"seed": s, "groups": groups})
        out[m] = runs
    return out


def test_query_records_use_exact_match_and_seed_levels(data):
    cells = _cells(data, {"atv": 0.5, "icl_5": 0.5}, {"atv": 3})
    recs = report.query_records(cells, data)
    # (3 atv seeds + 1 icl run) x 2 instruction sets x (32 + 32) test queries
    assert len(recs) == (3 + 1) * 2 * 64
    assert recs[recs.method == "icl_5"].seed.isna().all()  # one run: no seed level
    assert set(recs[recs.method == "atv"].seed) == {0, 1, 2}
    assert recs["first"].eq(1.0).all() and not recs["exact"].eq(1.0).all()


def test_verdicts_from_stats_with_mdd_and_heldout_rows(data):
    methods = sorted({m for c in CLAIMS for m in c.methods()})
    acc = dict.fromkeys(methods, 0.3) | {"atv": 1.0}
    cfg = get_compare_preset("tiny").with_overrides(bootstrap=200)
    vs = report.verdicts(report.query_records(_cells(data, acc, {"atv": 2}), data), cfg)
    assert len(vs) == 3
    first = vs[0]
    assert first["verdict"] == "reproduced"  # ATV always right, the others 30%: better
    assert {t["instructions"] for t in first["tests"]} == {"train", "heldout"}
    for t in first["tests"]:
        assert t["word"] == "better" and t["n_resamples"] == report.MIN_RESAMPLES
        assert t["levels"] == list(stats.LEVELS) and np.isfinite(t["mdd"])
        assert t["first_token"]["estimate"] == 0.0  # first token: all correct everywhere
    # The same numbers as stats.verdict on the same records (one function makes the words).
    recs = report.query_records(_cells(data, acc, {"atv": 2}), data)
    sub = recs[(recs.group == "in_domain") & (recs.instructions == "train")]
    v = stats.verdict(stats.hierarchical_bootstrap(sub.rename(columns={"exact": "value"}),
                                                   "atv", "icl_5", n_resamples=10_000),
                      cfg.equivalence_margin)  # fmt: skip
    t = first["tests"][0]
    assert (t["method"], t["baseline"], t["word"]) == ("atv", "icl_5", v.word)
    # the margin and the levels are the configuration's
    wide = report.verdicts(
        recs, cfg.with_overrides(equivalence_margin=0.1, bootstrap_levels=["task", "query"])
    )
    assert {(x["margin"], tuple(x["levels"])) for c in wide for x in c["tests"]} == {
        (0.1, ("task", "query"))
    }
    assert t["ci"] == pytest.approx(list(v.ci)) and t["mdd"] == pytest.approx(v.mdd)


def test_equal_needs_tost_not_a_ci_containing_zero():
    tests = [{"word": "inconclusive", "rule": "equal"}]
    assert report.claim_word(tests) == "inconclusive"
    assert report.claim_word([{"word": "equal", "rule": "equal"}]) == "reproduced"
    assert report.claim_word([{"word": "equal", "rule": "beats"}]) == "not reproduced"
    assert report.claim_word([{"word": "better", "rule": "beats"},
                              {"word": "worse", "rule": "beats"}]) == "not reproduced"  # fmt: skip
    assert report.claim_word([]) == "inconclusive"


def test_sentences_are_generated_from_the_verdict_output(data):
    methods = sorted({m for c in CLAIMS for m in c.methods()})
    cells = _cells(data, dict.fromkeys(methods, 0.5), {"atv": 2})
    vs = report.verdicts(report.query_records(cells, data), get_compare_preset("tiny"))
    md = report.verdict_sentences(vs)
    for v in vs:
        assert f"**{v['claim']}**: {v['verdict']}" in md
        for t in v["tests"]:
            assert f"→ {t['label']} (MDD {t['mdd']:.3f})" in md
    table = report.verdict_table(vs)
    assert table.count("\n") == 2 + sum(len(v["tests"]) for v in vs)


def test_first_token_flags_count_free_and_shared_first_tokens(data, tiny):
    out = report.first_token_flagged(data, tiny.tokenizer)
    # first / last and first_of_2 / last_of_2 answer with the same symbols: every answer's
    # first token is another task's too
    assert out == {g: len(s.test) for g, s in data.groups().items()}


def test_table_interval_is_the_hierarchical_one_on_exact_match(data):
    cells = _cells(data, {"atv": 0.6, "icl_5": 0.4}, {"atv": 3})
    recs = report.query_records(cells, data)
    cfg = get_compare_preset("tiny")
    lo, hi = report.method_ci(recs, "atv", "unseen", "heldout", cfg)
    sub = recs[(recs.group == "unseen") & (recs.instructions == "heldout")]
    res = stats.hierarchical_bootstrap(sub.rename(columns={"exact": "value"}), "atv",
                                       n_resamples=10_000, seed=cfg.data_seed)  # fmt: skip
    assert [lo, hi] == [round(x, 4) for x in res.interval(0.95)]
    assert lo < res.estimate < hi and res.estimate == pytest.approx(
        sub[sub.method == "atv"].exact.mean()
    )
    # tasks resampled too: wider than resampling queries with tasks fixed
    fixed = stats.hierarchical_bootstrap(sub.rename(columns={"exact": "value"}), "atv",
                                         levels=("query", "seed"), n_resamples=10_000)  # fmt: skip
    assert hi - lo >= (fixed.high - fixed.low) * 0.9


def test_grid_position_reads_the_line_through_the_chosen_point():
    cross = [{"lr": 1, "scale": 2}, {"lr": 3, "scale": 2}, {"lr": 9, "scale": 2},
             {"lr": 3, "scale": 1}, {"lr": 3, "scale": 4}]  # fmt: skip
    top = report.grid_position(cross, {"lr": 9, "scale": 2})
    assert top["lr"] == {"chosen": 9, "grid": [1, 3, 9], "position": "top"}
    assert top["scale"]["position"] == "not swept"  # λ swept at another learning rate only
    mid = report.grid_position(cross, {"lr": 3, "scale": 2})
    assert [mid[k]["position"] for k in ("lr", "scale")] == ["interior", "interior"]
    assert report.grid_position(cross, {"lr": 3, "scale": 1})["scale"]["position"] == "bottom"
    assert report.grid_position([{}], {}) == {}


def test_grid_summary_counts_the_methods_on_an_edge():
    def row(pos):
        return {"grid": {"lr": {"position": pos}, "scale": {"position": "top"}}}

    summary = {"a": row("interior"), "b": row("top"), "c": row("not swept"), "d": {},
               "e": {"skipped": "x"}, "_sweeps": {}}  # fmt: skip
    assert report.grid_summary(summary) == (
        "\nChosen lr interior to its grid: 1 of 2 swept methods; on an edge: b (top).\n"
    )
    assert report.grid_summary({"a": row("interior")}).endswith("1 of 1 swept methods.\n")
    assert report.grid_summary({"d": {}}) == ""
    # methods sweeping the learning rate and λ say whether every pair was tried
    cross, full = row("interior"), row("interior")
    cross["grid_pairs"], full["grid_pairs"] = {"tried": 8, "of": 12}, {"tried": 12, "of": 12}
    assert report.grid_summary({"atv": cross, "atv2": full}).endswith(
        "\nLearning rate and λ swept: atv a cross (8 of the 12 pairs); atv2 every pair "
        "(12 of the 12 pairs).\n"
    )


def test_no_cells_yet_gives_inconclusive_claims(data):
    recs = report.query_records({}, data)
    assert recs.empty and "method" in recs.columns
    vs = report.verdicts(recs, get_compare_preset("tiny"))
    assert [v["verdict"] for v in vs] == ["inconclusive"] * 3
    assert all(v["why"] == "methods missing" for v in vs)
    assert "methods missing" in report.verdict_sentences(vs)


def test_a_claim_is_not_reproduced_on_part_of_its_tests(data):
    # the rank-8 pair alone, both always right: its test is "equal", but the claim has four
    # more tests (rank 1, the static affine rows, prefix) that were not run
    cells = _cells(data, {"atv_r8": 1.0, "lora_r8": 1.0}, {"atv_r8": 2, "lora_r8": 2})
    vs = report.verdicts(report.query_records(cells, data), get_compare_preset("tiny"))
    rank = next(v for v in vs if v["claim"].startswith("equal rank"))
    assert {t["word"] for t in rank["tests"]} == {"equal"}
    assert rank["verdict"] == "inconclusive" and set(rank["by_instructions"].values()) == {
        "inconclusive"
    }
    assert rank["not_run"] == ["atv_r1 − lora_r1 (in_domain)",
                               "atv_affine_r1 − lora_r1 (in_domain)",
                               "atv_affine_r8 − lora_r8 (in_domain)",
                               "atv − prefix (in_domain)"]  # fmt: skip
    assert rank["why"] == "4 of its 5 tests not run"
    assert "not run (a method without results): atv_r1 − lora_r1" in report.verdict_sentences(vs)
    # one failed test refutes a claim even when others were not run
    assert report.claim_word([{"word": "worse", "rule": "equal"}], not_run=3) == "not reproduced"
    assert report.claim_word([{"word": "equal", "rule": "equal"}], not_run=1) == "inconclusive"


def test_verdicts_md_names_the_configured_methods_without_results(data):
    cells = _cells(data, {"atv": 0.6, "icl_5": 0.4}, {"atv": 2})
    vs = report.verdicts(report.query_records(cells, data), get_compare_preset("tiny"))
    summary = {"atv": {"seeds": [0, 1]}, "icl_5": {"seeds": [0]}, "prefix": {"skipped": "x"}}
    md = report.format_verdicts(vs, summary, ["icl_5", "atv", "prefix", "lora_r8"])
    assert "Seeds per method: atv 2, icl_5 1." in md
    assert md.rstrip().endswith("No result yet (`missing_cells` in `comparison.json`): "
                                "prefix, lora_r8.")  # fmt: skip
    assert "No result yet" not in report.format_verdicts(vs, summary, ["atv"])
