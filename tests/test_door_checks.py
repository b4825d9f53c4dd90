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


# ---------------------------------------------------------------------------- issue 29's doors


def _hooks_gone(model) -> bool:
    return not any(h.fwd_hooks for h in model.bridge.hook_dict.values())


def test_inject_refuses_positions_past_the_prompt(model):
    from tvlens.injection.inject import inject

    tokens = model.to_tokens(["a -> b", "c -> d"])
    n = tokens.shape[1]
    vec = torch.zeros(model.d_model)
    for bad in (torch.tensor([1, n]), torch.tensor([-n - 1, 0])):
        with pytest.raises(ConfigError, match=rf"positions holds -?\d+, past the prompts \({n} "):
            with inject(model, vec, layer=1, positions=bad), torch.no_grad():
                model(tokens)
        assert _hooks_gone(model)
    # beartype refuses these first under the tests; without it, a ConfigError says the same
    for bad in (torch.tensor([0.5, 1.0]), "first"):
        with pytest.raises((ConfigError, TypeError), match="positions"):
            with inject(model, vec, layer=1, positions=bad):
                pass
    # in range: runs, and equals writing the same position by hand
    with inject(model, vec, layer=1, positions=torch.tensor([n - 1, n - 1])), torch.no_grad():
        a = model(tokens)
    with inject(model, vec, layer=1, positions="last"), torch.no_grad():
        b = model(tokens)
    torch.testing.assert_close(a, b)


def test_a_metric_built_for_another_batch_is_refused(model):
    from tvlens.patching.metrics import LogitDiff

    tokens = model.to_tokens(["a -> b", "c -> d", "e -> f"])
    with torch.no_grad():
        logits = model(tokens)
    with pytest.raises(ConfigError, match=r"AnswerProb.answer has 2 entries but the batch has 3"):
        AnswerProb(torch.tensor([7, 8]))(logits)
    with pytest.raises(ConfigError, match=r"AnswerProb.pos holds positions outside"):
        AnswerProb(torch.tensor([7, 8, 9]), torch.tensor([0, 1, 99]))(logits)
    with pytest.raises(ConfigError, match=r"AnswerProb.answer holds token ids outside"):
        AnswerProb(torch.tensor([7, 8, 10_000]))(logits)
    with pytest.raises(ConfigError, match=r"LogitDiff.correct has 2 .*from_batches\(clean"):
        LogitDiff(torch.tensor([7, 8]), torch.tensor([7, 9]))(logits)
    # the right batch: the mean probability of the answers at the last position
    want = torch.softmax(logits[:, -1].float(), -1)[torch.arange(3), torch.tensor([7, 8, 9])]
    torch.testing.assert_close(AnswerProb(torch.tensor([7, 8, 9]))(logits), want.mean())


@pytest.mark.parametrize("layer", [1.5, True, "1", None])
def test_a_layer_that_is_not_an_integer_is_named(model, layer):
    from tvlens.errors import LayerError

    # beartype may refuse it first under the tests (it takes True for an int); the check
    # itself, as a user without beartype meets it:
    with pytest.raises((LayerError, TypeError), match="layer"):
        model.resid_hook(layer)
    check = getattr(type(model).check_layer, "__wrapped__", type(model).check_layer)
    with pytest.raises(LayerError, match=rf"layer must be an integer, got {layer!r}"):
        check(model, layer)
    import numpy as np

    assert check(model, np.int64(2)) == 2 and check(model, -1) == 2  # numpy ints stay fine


def test_patch_refuses_empty_and_bad_layer_lists(model):
    from tvlens.errors import LayerError

    tokens = model.to_tokens(["a -> b", "c -> d"])
    metric = AnswerProb(torch.tensor([7, 7]))
    with pytest.raises(ConfigError, match=r"layers=\[\] measures nothing"):
        patch(model, tokens, tokens, metric, "resid", layers=[], progress=False)
    with pytest.raises(ConfigError, match=r"layers=\[\] measures nothing"):
        patch(model, tokens, tokens, metric, "resid", layers=[], method="attribution")
    # beartype refuses these first under the tests; without it, the same error classes
    with pytest.raises((ConfigError, TypeError), match="layers"):
        patch(model, tokens, tokens, metric, "resid", layers=1, progress=False)
    with pytest.raises((LayerError, TypeError), match="layer"):
        patch(model, tokens, tokens, metric, "resid", layers=[0.5], progress=False)
    res = patch(model, tokens, tokens, metric, "resid", layers=[2, 0, -1], progress=False)
    assert res.values.shape[0] == 2  # layers 0 and 2 (-1 is 2)


def test_too_long_prompts_and_foreign_tokens_are_refused(make_tiny, letters_tokenizer):
    from tvlens.errors import PromptError

    short = make_tiny("short-ctx", "gpt2", letters_tokenizer, n_layers=1, n_ctx=16).model
    with pytest.raises(PromptError, match="17 tokens long but .* n_ctx=16: use fewer"):
        short(torch.full((1, 17), 7))
    with pytest.raises(PromptError, match="17 tokens long"):
        short.run_with_cache(torch.full((1, 17), 7))
    with pytest.raises(PromptError, match=r"Token id 500 is outside .* vocabulary \(0..16\)"):
        short(torch.tensor([[1, 500]]))
    assert short(torch.full((1, 16), 7)).shape == (1, 16, 17)


def test_one_answer_token_policy_for_every_scorer(model, letters_task):
    """Multi-token answers: vectors and layer_sweep_correct refuse them, as patch and
    function_vector do, with the way to score their first token explicitly."""
    from tvlens.errors import PromptError
    from tvlens.injection import evaluate_task_vectors
    from tvlens.injection.sweep import layer_sweep_correct
    from tvlens.tasks import Task, sample_prompts

    two = Task.from_pairs("two", [(w, f"{w} a") for w in "bcdefghxy"])
    with pytest.raises(PromptError, match=r"pass answer_token='first' \(--answer-token first\)"):
        evaluate_task_vectors(model, [two], methods=("hendel",), k=2, n_extract=2, progress=False)
    prompts = sample_prompts(two, 0, 3, seed=0)
    vecs = torch.zeros(model.n_layers, model.d_model)
    layers = list(range(model.n_layers))
    with pytest.raises(PromptError, match="answer_token='first'"):
        layer_sweep_correct(model, prompts, vecs, layers)
    first = layer_sweep_correct(model, prompts, vecs, layers, answer_token="first")
    assert first.shape == (3, model.n_layers)
    rep = evaluate_task_vectors(model, [two], methods=("hendel",), k=2, n_extract=2,
                                progress=False, answer_token="first")  # fmt: skip
    assert rep.config["answer_token"] == "first" and "two" in rep.tasks
    # single-token tasks: the default scores them as before
    one = evaluate_task_vectors(model, [letters_task], methods=("hendel",), k=2, n_extract=2,
                                split=(0.5, 0.2, 0.3), progress=False)  # fmt: skip
    assert 0.0 <= one.tasks["letters"].icl <= 1.0
    with pytest.raises((ConfigError, TypeError), match="answer_token"):
        layer_sweep_correct(model, prompts, vecs, layers, answer_token="all")


def _hashes(folder) -> dict:
    """Every file under ``folder`` by its bytes' hash (the user's files, before and after)."""
    import hashlib
    from pathlib import Path

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}  # fmt: skip


def test_wrap_refuses_a_model_it_cannot_measure(make_tiny, letters_tokenizer):
    import copy

    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.conftest import LETTERS
    from tvlens.models import TVModel, build_word_tokenizer

    tiny = make_tiny("gpt2", "gpt2", letters_tokenizer)
    base = copy.deepcopy(tiny.hf).transformer  # a GPT2Model: what AutoModel loads
    with pytest.raises(ConfigError, match="has no language-model head .* AutoModelForCausalLM"):
        TVModel.wrap(base, letters_tokenizer)
    with torch.device("meta"):
        meta = GPT2LMHeadModel(GPT2Config(vocab_size=len(letters_tokenizer), n_embd=32,
                                          n_layer=1, n_head=4, n_positions=64))  # fmt: skip
    with pytest.raises(ConfigError, match="weights are on the 'meta' device"):
        TVModel.wrap(meta, letters_tokenizer)
    bigger = build_word_tokenizer((*LETTERS, "p", "q", "r"))
    rows = tiny.hf.get_input_embeddings().num_embeddings
    with pytest.raises(
        ConfigError, match=rf"tokenizer has {len(bigger)} tokens but .* {rows} rows"
    ):
        TVModel.wrap(copy.deepcopy(tiny.hf), bigger)
    # the model and tokenizer it was made with still wrap
    assert TVModel.wrap(copy.deepcopy(tiny.hf), letters_tokenizer).n_layers == 3


def test_task_files_with_a_repeated_key_or_an_empty_split(tmp_path):
    import json

    from tvlens.errors import EmptyTaskError, TaskFormatError
    from tvlens.tasks import Task

    dup = tmp_path / "dup.json"
    dup.write_text('{"cat": "chat", "dog": "chien", "cat": "gato"}')
    row_dup = tmp_path / "rows.json"
    row_dup.write_text('[{"input": "a", "output": "b", "output": "c"}]')
    empty = tmp_path / "splits.json"
    empty.write_text(json.dumps({"train": {"a": "b", "c": "d"}, "valid": [], "test": {"e": "f"}}))
    before = _hashes(tmp_path)
    with pytest.raises(TaskFormatError, match="has the key 'cat' twice .* list of"):
        Task.from_json(dup)
    with pytest.raises(TaskFormatError, match="has the key 'output' twice"):
        Task.from_json(row_dup)
    with pytest.raises(EmptyTaskError, match="split 'valid' is empty"):
        Task.from_json(empty)
    with pytest.raises(TaskFormatError, match="is a folder, not a task file: .* suite"):
        Task.from_json(tmp_path)
    assert _hashes(tmp_path) == before
    # repeated inputs are fine as rows, and a file with every split filled loads
    ok = tmp_path / "ok.json"
    ok.write_text('[{"input": "a", "output": "b"}, {"input": "a", "output": "c"}]')
    assert len(Task.from_json(ok)) == 2


@pytest.mark.parametrize("arch", ["t5", "mamba"])
def test_a_gguf_of_a_non_causal_lm_is_refused_before_conversion(arch, tmp_path, monkeypatch):
    from tests.models.gguf_files import write_header_only
    from tvlens.errors import ModelLoadError
    from tvlens.models import load_model

    monkeypatch.setenv("TVLENS_CACHE", str(tmp_path / "cache"))
    user = tmp_path / "user"
    user.mkdir()
    path = user / f"{arch}.gguf"
    write_header_only(path, arch)
    before = _hashes(user)
    with pytest.raises(ModelLoadError, match=rf"holds a '{arch}' model \(.*\): tvlens reads "
                       "decoder-only causal language models"):  # fmt: skip
        load_model(str(path), device="cpu")
    assert _hashes(user) == before
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.json"))


def test_a_folder_named_gguf_loads_as_the_folder_it_is(make_tiny, letters_tokenizer, tmp_path):
    """A folder whose name ends in .gguf holding an HF model is that model (not "does not
    exist"), and is left as it was."""
    import shutil

    from tvlens.models import load_model

    tiny = make_tiny("gpt2", "gpt2", letters_tokenizer)
    folder = shutil.copytree(tiny.folder, tmp_path / "x.gguf")
    before = _hashes(folder)
    model = load_model(str(folder), device="cpu")
    assert model.spec.source == "folder"
    assert _hashes(folder) == before


def test_empty_lists_are_refused_by_name(model, letters_task):
    from tvlens.errors import EmptyTaskError
    from tvlens.extraction import hendel_task_vector
    from tvlens.injection import evaluate_task_vectors

    with pytest.raises(ConfigError, match=r"layers=\[\] measures nothing"):
        hendel_task_vector(model, letters_task, k=2, n_prompts=2, layers=[])
    with pytest.raises(EmptyTaskError, match="got no tasks"):
        evaluate_task_vectors(model, [], methods=("hendel",), progress=False)
    with pytest.raises(ConfigError, match="methods is empty"):
        evaluate_task_vectors(model, [letters_task], methods=(), progress=False)
    tv = hendel_task_vector(model, letters_task, k=2, n_prompts=2, layers=[2, 0])
    assert tuple(tv.layers) == (2, 0)
