"""A model built in memory (no folder, no hub) runs every main job: ICL evaluation, task and
function vectors, the task-vector report, TD by layer, patching and the comparison; what
needs the model on disk (a fresh copy for the peft baselines) says so in one line."""

import pytest
import torch

from tvlens.errors import TVLensError
from tvlens.models import TVModel, build_hf_model


def test_every_main_job_runs_on_a_model_built_in_memory(tmp_path):
    from tvlens.compare.run import run_compare
    from tvlens.evaluation.icl import evaluate_icl
    from tvlens.extraction import function_vector, hendel_task_vector
    from tvlens.injection import evaluate_task_vectors
    from tvlens.models import build_word_tokenizer
    from tvlens.patching import LogitDiff, patch
    from tvlens.probing import td_by_layer
    from tvlens.tasks import get_suite, sample_prompts, synthetic_vocabulary, tokenize_prompts

    # the tiny comparison preset's lists: 16 symbols
    symbol_tokenizer = build_word_tokenizer(synthetic_vocabulary(n_symbols=16, n_bits=3))

    hf = build_hf_model("llama", len(symbol_tokenizer), seed=0, n_layers=2, d_model=32,
                        n_heads=4, n_kv_heads=2, n_ctx=64)  # fmt: skip
    model = TVModel.wrap(hf, symbol_tokenizer, device="cpu")
    assert model.spec.source == "memory" and model.spec.path is None
    suite = get_suite("lists", n_symbols=8, min_len=2, max_len=3, n_examples=40, seed=0,
                      ops=["first", "last"])  # fmt: skip
    task = suite.tasks[0]
    assert evaluate_icl(model, suite, k=2, n_prompts=4, progress=False).first_token()
    assert hendel_task_vector(model, task, 2, 4).vectors.shape == (2, 32)
    fv, _ = function_vector(model, task, k=2, n_prompts=4, top_k_heads=2, progress=False)
    assert fv.vectors.shape == (1, 32)
    assert evaluate_task_vectors(model, suite, k=2, n_extract=4, progress=False).tasks
    assert len(td_by_layer(model, suite, k=2, n_prompts=4, progress=False).td) == 2
    ps = sample_prompts(task, 2, 2, seed=0, template=model.template(None))
    pb = tokenize_prompts(ps, model, "left")
    answers = tokenize_prompts(ps, model, "left", include_answer=True).answer_ids
    ans = torch.tensor([a[0] for a in answers])
    res = patch(model, pb.tokens, pb.tokens.flip(0), LogitDiff(ans, ans.flip(0)), "resid",
                progress=False)  # fmt: skip
    assert res.values.shape[0] == 2
    kw = dict(preset="tiny", seeds=1, progress=False, in_domain=["l34/first", "l34/last"],
              unseen=["l2/first=first_of_2"])  # fmt: skip
    methods = ["zero_shot", "icl_5", "task_vector", "retrieval"]
    cmp = run_compare(model, tmp_path / "c", methods=methods, **kw)
    assert set(methods) <= set(cmp.rows())
    with pytest.raises(TVLensError, match="save_pretrained") as e:
        run_compare(model, tmp_path / "d", methods=["lora_qv"], sweep=False, **kw)
    assert "\n" not in str(e.value)
    assert not any(h.fwd_hooks for h in model.bridge.hook_dict.values())
