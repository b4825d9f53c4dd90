"""The task-vector prompting loss (Yang et al. 2025) of synthetic training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tvlens.injection import inject
from tvlens.models import build_word_tokenizer, load_model
from tvlens.tasks import get_suite
from tvlens.training import get_preset, train_synthetic
from tvlens.training.data import ICLBatcher
from tvlens.training.train import run_vocabulary, same_task_partner, tv_prompting_loss


def test_partner_is_another_row_of_the_same_task():
    tasks = torch.tensor([0, 1, 0, 2, 1, 0])
    p = same_task_partner(tasks)
    assert torch.equal(tasks[p], tasks)
    assert sorted(p.tolist()) == list(range(6))  # a permutation
    alone = tasks == 2
    assert torch.equal(p[alone], torch.arange(6)[alone])  # alone with its task: itself
    assert (p[~alone] != torch.arange(6)[~alone]).all()


def test_loss_equals_bridge_injection_of_the_partner_vector(tmp_path):
    """tv_prompting_loss (a forward hook on the HF block) equals an independent computation:
    the bridge's inject() of the partner's ICL residual into the zero-shot prompt."""
    cfg = get_preset("tiny")
    res = train_synthetic(tmp_path / "r", preset="tiny", steps=30, device="cpu", progress=False)
    model = load_model(res.run_dir, device="cpu")
    hf = model.bridge.original_model
    suite = get_suite(**cfg.suite)
    tok = build_word_tokenizer(run_vocabulary(cfg, suite))
    batch = ICLBatcher(suite, tok, cfg.k, cfg.template, n_ctx=cfg.n_ctx).batch(3, 16, seed=0)
    layer = 0
    with torch.no_grad():
        out = hf(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        )
        got = tv_prompting_loss(hf, batch, out.hidden_states, layer)
        partner = same_task_partner(batch.task_index)
        qpos = batch.answer_start[:, -1] - 1
        vecs = out.hidden_states[layer + 1][partner, qpos[partner]]
        with inject(model, vecs, layer=layer, mode="replace", positions="last"):
            logits = model(batch.zs_input_ids, attention_mask=batch.zs_attention_mask)
        want = F.cross_entropy(logits[:, -1], batch.zs_answer)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # The zero-shot prompts are "<bos> x ->" with the query's answer as target.
    arrow = tok.convert_tokens_to_ids("->")
    assert (batch.zs_input_ids[:, -1] == arrow).all()
    query_answer = batch.input_ids[torch.arange(16), batch.answer_start[:, -1]]
    assert torch.equal(batch.zs_answer, query_answer)


def test_training_with_tv_loss_resumes_exactly(tmp_path):
    kw = dict(
        preset="tiny", steps=24, device="cpu", progress=False, tv_loss_weight=0.5, tv_loss_layer=0
    )
    full = train_synthetic(tmp_path / "full", **kw)
    train_synthetic(tmp_path / "part", stop_after=13, **kw)
    resumed = train_synthetic(tmp_path / "part", resume=True, **kw)
    assert full.metrics["checkpoints"] == resumed.metrics["checkpoints"]
    a = load_model(full.run_dir, device="cpu").bridge.original_model.state_dict()
    b = load_model(resumed.run_dir, device="cpu").bridge.original_model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
