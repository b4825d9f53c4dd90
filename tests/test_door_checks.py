"""Arguments checked at the door: one TVLensError naming the argument, before any work."""

import pytest
import torch

from tvlens.errors import ConfigError, TVLensError
from tvlens.injection.inject import inject
from tvlens.patching import patch
from tvlens.patching.metrics import AnswerProb


@pytest.fixture(scope="module")
def model(make_tiny, letters_tokenizer):
    return make_tiny("gpt2", "gpt2", letters_tokenizer).model


@pytest.mark.parametrize("max_batch", [0, -3, True])
def test_patch_refuses_a_bad_max_batch(model, max_batch):
    tokens = model.to_tokens(["a -> b", "c -> d"])
    with pytest.raises(ConfigError, match="max_batch must be an integer >= 1"):
        patch(model, tokens, tokens, AnswerProb(torch.tensor([7, 7])), "resid", max_batch=max_batch)


def test_inject_refuses_a_vector_batch_that_does_not_match(model):
    tokens = model.to_tokens(["a -> b", "c -> d", "e -> f"])
    rows = torch.zeros(2, model.d_model)
    with pytest.raises(TVLensError, match="vector has 2 rows .* the batch has 3 prompts"):
        with inject(model, rows, layer=1), torch.no_grad():
            model(tokens)
    with torch.no_grad():  # the hook is gone after the error
        torch.testing.assert_close(model(tokens), model(tokens))
        assert not any(h.fwd_hooks for h in model.bridge.hook_dict.values())
    with pytest.raises(TVLensError, match=r"shape \(1, 2, 32\)"):
        with inject(model, torch.zeros(1, 2, model.d_model), layer=1):
            pass


def test_old_names_still_work_with_a_deprecation_warning(model, letters_task):
    from tvlens.extraction import function_vector
    from tvlens.patching import patching_prompts
    from tvlens.tasks import TaskSuite

    suite = TaskSuite("letters", (letters_task,))
    new = patching_prompts(model, suite, k=2, n_prompts=2)
    with pytest.warns(DeprecationWarning, match="n_per_task= is renamed n_prompts="):
        old = patching_prompts(model, suite, k=2, n_per_task=2)
    assert torch.equal(old[0].tokens, new[0].tokens)
    with pytest.raises(ConfigError, match="pass only n_prompts"):
        patching_prompts(model, suite, k=2, n_prompts=2, n_per_task=3)
    tv, _ = function_vector(model, letters_task, k=2, n_prompts=2, top_k_heads=3, progress=False)
    with pytest.warns(DeprecationWarning, match="top_k= is renamed top_k_heads="):
        tv_old, _ = function_vector(model, letters_task, k=2, n_prompts=2, top_k=3, progress=False)
    torch.testing.assert_close(tv.vectors, tv_old.vectors)


def _entry_points(model, task, tmp):
    """(name, call) pairs: each call passes one bad argument to one public entry point."""
    from tvlens.evaluation.icl import evaluate_icl
    from tvlens.extraction import function_vector, hendel_task_vector, per_query_vectors
    from tvlens.injection import evaluate_task_vectors
    from tvlens.injection.sweep import layer_sweep_correct
    from tvlens.models import load_model
    from tvlens.probing import td_by_layer
    from tvlens.tasks import TaskSuite, sample_prompts

    suite = TaskSuite("letters", (task,))
    zs = sample_prompts(task, 0, 2, seed=0, template=model.template(None))
    return [
        ("load_model: missing folder", lambda: load_model(tmp / "nope", device="cpu")),
        ("load_model: unknown device", lambda: load_model(model, device="tpu9")),
        ("load_model: a number", lambda: load_model(3)),
        ("evaluate_icl: k < 0", lambda: evaluate_icl(model, suite, k=-1)),
        ("evaluate_icl: unknown template", lambda: evaluate_icl(model, suite, template="xml")),
        (
            "hendel_task_vector: layer out of range",
            lambda: hendel_task_vector(model, task, k=2, n_prompts=2, layers=[99]),
        ),
        ("hendel_task_vector: n_prompts 0", lambda: hendel_task_vector(model, task, 2, 0)),
        (
            "per_query_vectors: k larger than the task",
            lambda: per_query_vectors(model, task, k=10_000, n_prompts=2),
        ),
        (
            "function_vector: k 1",
            lambda: function_vector(model, task, k=1, n_prompts=2, progress=False),
        ),
        (
            "function_vector: top_k_heads 0",
            lambda: function_vector(model, task, k=2, n_prompts=2, top_k_heads=0, progress=False),
        ),
        (
            "evaluate_task_vectors: unknown method",
            lambda: evaluate_task_vectors(model, suite, methods=("atv",), progress=False),
        ),
        (
            "layer_sweep_correct: vectors of another width",
            lambda: layer_sweep_correct(model, zs, torch.zeros(1, 7), [0], "add", 1.0),
        ),
        (
            "td_by_layer: n_prompts 0",
            lambda: td_by_layer(model, suite, n_prompts=0, progress=False),
        ),
        ("td_by_layer: knn_k 0", lambda: td_by_layer(model, suite, knn_k=0, progress=False)),
        (
            "patch: unknown component",
            lambda: patch(
                model,
                model.to_tokens(["a -> b"]),
                model.to_tokens(["c -> d"]),
                AnswerProb(torch.tensor([7])),
                "attn_pattern",
            ),
        ),  # fmt: skip
    ]


def test_every_entry_point_refuses_bad_arguments_in_one_line(model, letters_task, tmp_path):
    """One TVLensError naming the problem, one line, before any work (not a torch error from
    deep inside); hooks left as they were."""
    failures = []
    for name, call in _entry_points(model, letters_task, tmp_path):
        try:
            call()
        except TVLensError as e:
            if "\n" in str(e):
                failures.append(f"{name}: message of several lines")
        except Exception as e:  # noqa: BLE001 - what the test looks for
            failures.append(f"{name}: {type(e).__name__}: {str(e)[:120]}")
        else:
            failures.append(f"{name}: accepted")
    assert not any(h.fwd_hooks for h in model.bridge.hook_dict.values())
    assert not failures, "\n".join(failures)
