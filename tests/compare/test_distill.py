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
