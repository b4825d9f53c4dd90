"""The ATV generator's input in the comparison: the instructed prompt by default, or the
query alone in the official training script's ``Q: {input} \\n A: `` frame (the paper-faithful
arm), while the target reads the instructed prompt either way."""

import pytest

from tvlens.atv.data import QUERY_FORMAT, generator_text
from tvlens.compare.run import build_method, compare_context, get_compare_preset
from tvlens.errors import TVLensError
from tvlens.models import load_model


@pytest.fixture(scope="module")
def ctx(atv_target, tmp_path_factory):
    target = load_model(atv_target, device="cpu")
    return compare_context(get_compare_preset("tiny"), target, tmp_path_factory.mktemp("gi"))


def _ids(gen, text):
    ids = list(gen.tokenizer(text, add_special_tokens=False)["input_ids"])
    return ([] if gen.bos_id is None else [gen.bos_id]) + ids


def _contains(seq, sub):
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_query_generator_reads_no_instruction(ctx):
    prompts = ctx.data.in_domain.test[:4]
    assert all(p.template.instruction for p in prompts)
    default = build_method(ctx, "atv", 0).build()
    query = build_method(ctx, "atv", 0, {"generator_input": "query"}).build()
    assert default.spec.generator_input == "prompt" and query.spec.generator_input == "query"
    bd, bq = default.batch(prompts), query.batch(prompts)
    # the target reads the same instructed prompt under both
    assert bd.tokens.equal(bq.tokens) and bd.labels.equal(bq.labels)
    gen = query.generator
    for i, p in enumerate(prompts):
        instr = list(gen.tokenizer(p.template.instruction, add_special_tokens=False)["input_ids"])
        row_d = bd.gen_tokens[i][bd.gen_mask[i].bool()].tolist()
        row_q = bq.gen_tokens[i][bq.gen_mask[i].bool()].tolist()
        assert row_q == _ids(gen, QUERY_FORMAT.format(x=p.query.input))
        assert _contains(row_d, instr) and not _contains(row_q, instr)
        assert generator_text(p, "query") == f"Q: {p.query.input} \n A: "


def test_unknown_generator_input_is_one_line(ctx):
    with pytest.raises(TVLensError, match="instructed") as e:
        build_method(ctx, "atv", 0, {"generator_input": "prompt+"}).build()
    assert "\n" not in str(e.value)


def test_predictions_stored_per_query_in_order(ctx):
    """A cell stores what the method said per query (tvlens.evaluation.icl's recorder), in the
    queries' order although it scores them shortest first; an exact match says the answer."""
    from tvlens.compare.run import _score

    prompts = ctx.data.in_domain.test[:12]
    hits = 0
    for name in ("zero_shot", "icl_5"):
        res, _, _ = _score(build_method(ctx, name, 0), prompts)
        hits += sum(res["exact"])
        assert len(res["pred"]) == len(prompts) and None not in res["pred"]
        for p, e, said in zip(prompts, res["exact"], res["pred"], strict=True):
            assert (said == p.answer) == bool(e), (name, p.query, said)
    assert 0 < hits < 2 * len(prompts)  # both kinds of query are checked
