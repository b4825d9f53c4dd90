"""The distillation test of the equal-rank claim on the tiny preset: the KL is the textbook
KL, a student identical to its teacher has none, distillation lowers the KL it starts from,
and only in-domain training queries are used."""

import pytest
import torch

from tvlens.compare.distill import DistillResult, kl, run_distill
from tvlens.compare.run import compare_context, get_compare_preset
from tvlens.models import load_model


def test_kl_is_the_textbook_kl():
    p = torch.log_softmax(torch.randn(3, 11), -1)
    q = torch.log_softmax(torch.randn(3, 11), -1)
    want = torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(kl(p, q), want)
    assert torch.allclose(kl(p, p), torch.zeros(3), atol=1e-6) and (kl(p, q) > 0).all()


def test_any_rank_is_a_pair_and_a_bad_one_is_refused_before_loading(monkeypatch):
    import tvlens.compare.distill as D
    import tvlens.compare.registry as R
    from tvlens.errors import TVLensError

    monkeypatch.setattr(R, "REGISTRY", dict(R.REGISTRY))
    assert R.rank_pair(4) == ("lora_r4", "atv_r4")
    assert R.get_method_spec("lora_r4").kwargs == {"kind": "lora_sites", "rank": 4}
    assert R.get_method_spec("atv_r4").kwargs == {"kind": "rank", "rank": 4}
    assert R.rank_pair(4) == ("lora_r4", "atv_r4")  # registered once
    assert R.get_method_spec("lora_r1") == R.rank_pair_specs(1)[1]

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the rank was checked")

    monkeypatch.setattr(D, "as_model", no_model)
    for bad in (0, -1):
        with pytest.raises(TVLensError, match="rank"):
            run_distill("/no/such/model", rank=bad)


@pytest.fixture(scope="module")
def result(atv_target, tmp_path_factory):
    """``run_distill`` (what ``tvlens atv distill`` runs) on the tiny preset, shortened."""
    out = tmp_path_factory.mktemp("distill")
    res = run_distill(str(atv_target), out, preset="tiny", device="cpu", epochs=2, patience=1)
    ctx = compare_context(get_compare_preset("tiny"), load_model(atv_target, device="cpu"), out)
    return res, ctx


def test_distillation_lowers_the_kl_on_held_out_queries(result):
    res, ctx = result
    assert set(res.directions) == {"lora->atv", "atv->lora"}
    for d in res.directions.values():
        for g in ("in_domain", "unseen"):
            v = d["groups"][g]
            assert v["teacher_to_target"] > 0 and 0 <= v["student_accuracy"] <= 1
        ind = d["groups"]["in_domain"]
        assert ind["student_after"] < ind["student_before"]  # it learned the teacher
    back = DistillResult.load(ctx.out / "distill_r1.json")  # written by run_distill
    assert back.directions == res.directions
    assert set(res.to_dataframe()["group"]) == {"in_domain", "unseen"}
    runs = sorted(p.name for p in (ctx.out / "runs").iterdir())
    assert runs[0].startswith("distill_r1_") and len(runs) == 4  # two teachers, two students
