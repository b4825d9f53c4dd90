"""Bad inputs raise the tvlens error that names the problem."""

import json
import shutil

import pytest
import torch

from tvlens.errors import (
    CheckpointError,
    ConfigError,
    EmptyTaskError,
    LayerError,
    ModelLoadError,
    PromptError,
    TVLensError,
    UnknownTaskError,
)
from tvlens.models import load_model
from tvlens.tasks import (
    Example,
    ICLPrompt,
    Task,
    TaskSuite,
    bitwise_suite,
    dummy_query_variants,
    get_suite,
    latent_mapping_suite,
    list_suite,
    sample_prompts,
    tokenize_prompts,
    word_suite,
)

# ---------------------------------------------------------------------------- tasks


def test_error_classes_are_also_builtin_errors():
    assert issubclass(UnknownTaskError, KeyError) and issubclass(EmptyTaskError, ValueError)
    assert issubclass(PromptError, ValueError) and issubclass(LayerError, IndexError)
    assert issubclass(ModelLoadError, OSError) and issubclass(CheckpointError, OSError)
    for cls in (UnknownTaskError, EmptyTaskError, PromptError, LayerError, CheckpointError):
        assert issubclass(cls, TVLensError)


def test_unknown_task_in_suite():
    suite = latent_mapping_suite(2, 8)
    with pytest.raises(UnknownTaskError) as info:
        suite["latent_7"]
    # Unlike a bare KeyError, the message is not wrapped in quotes.
    assert str(info.value) == (
        "No task 'latent_7' in suite 'latent'. Available: latent_0, latent_1."
    )


def test_unknown_suite_name():
    with pytest.raises(UnknownTaskError, match="Unknown suite 'nope'.*bitwise, latent, lists"):
        get_suite("nope")


def test_unknown_word_task():
    with pytest.raises(UnknownTaskError, match=r"No word-level task\(s\) \['synonyms'\]"):
        word_suite(["antonyms", "synonyms"])


def test_unknown_generator_ops():
    with pytest.raises(TVLensError, match=r"Unknown bitwise ops \['nxor'\]"):
        bitwise_suite(ops=["and", "nxor"])
    with pytest.raises(TVLensError, match=r"Unknown list ops \['middle'\]"):
        list_suite(ops=["middle"])


def test_empty_task():
    with pytest.raises(EmptyTaskError, match="Task 'empty' has no examples"):
        Task("empty", ())
    with pytest.raises(EmptyTaskError, match="empty input or output"):
        Task.from_pairs("blank", [("a", "b"), ("c", " ")])
    with pytest.raises(EmptyTaskError, match="Suite 'none' has no tasks"):
        TaskSuite("none", ())


def test_empty_json_task_file(tmp_path):
    path = tmp_path / "nothing.json"
    path.write_text("[]")
    with pytest.raises(EmptyTaskError, match="Task 'nothing' has no examples"):
        Task.from_json(path)


def test_missing_task_file_and_suite_folder(tmp_path):
    with pytest.raises(UnknownTaskError, match="missing.json' does not exist"):
        Task.from_json(tmp_path / "missing.json")
    with pytest.raises(UnknownTaskError, match="Suite folder .*nowhere' does not exist"):
        TaskSuite.load(tmp_path / "nowhere")
    with pytest.raises(EmptyTaskError, match="holds no \\*.json task files"):
        TaskSuite.load(tmp_path)


def test_task_file_of_the_wrong_shape(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"input": "a"}]))
    with pytest.raises(ValueError, match="must be a JSON list of"):
        Task.from_json(path)


def test_task_file_with_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"input": "a", "output": ')
    with pytest.raises(TVLensError, match="broken.json' is not valid JSON"):
        Task.from_json(path)


def test_split_of_a_too_small_task():
    task = Task.from_pairs("tiny", [("a", "b"), ("c", "d")])
    with pytest.raises(EmptyTaskError, match="Task 'tiny' has 2 examples: too few to split"):
        task.split((0.5, 0.25, 0.25))


# ---------------------------------------------------------------------------- prompts


def test_k_larger_than_the_task():
    task = Task.from_pairs("four", [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")])
    with pytest.raises(EmptyTaskError, match="Task 'four' has 4 examples but k=4 .* need 5"):
        sample_prompts(task, k=4, n=1)
    sample_prompts(task, k=3, n=1)  # the largest k that fits
    # Duplicated inputs leave fewer demonstrations than examples.
    dup = Task.from_pairs("dup", [("a", "b"), ("a", "c"), ("e", "f")])
    with pytest.raises(EmptyTaskError, match="only 1 demonstrations whose input differs"):
        sample_prompts(dup, k=2, n=3)


def test_bad_k_and_n():
    task = latent_mapping_suite(1, 8)["latent_0"]
    with pytest.raises(PromptError, match="k .* must be >= 0, got -1"):
        sample_prompts(task, k=-1, n=1)
    with pytest.raises(PromptError, match="n .* must be >= 1, got 0"):
        sample_prompts(task, k=2, n=0)


def test_no_dummy_query_left():
    task = Task.from_pairs("three", [("a", "b"), ("c", "d"), ("e", "f")])
    prompts = sample_prompts(task, k=2, n=1)
    with pytest.raises(EmptyTaskError, match="no example left for a dummy query with k=2"):
        dummy_query_variants(prompts, task)


def test_tokenize_nothing(letters_tokenizer):
    with pytest.raises(EmptyTaskError, match="No prompts"):
        tokenize_prompts([], letters_tokenizer)


def test_prompt_longer_than_context(make_tiny, letters_tokenizer):
    model = make_tiny("short-ctx", "gpt2", letters_tokenizer, n_layers=1, n_ctx=16).model
    assert model.n_ctx == 16
    task = Task.from_pairs("letters", [(w, w) for w in "abcdefgh"])
    fits = sample_prompts(task, k=3, n=2)  # 1 + 4 * 3 + 2 = 15 tokens
    assert tokenize_prompts(fits, model).tokens.shape == (2, 15)
    too_long = sample_prompts(task, k=4, n=2)  # 19 tokens
    with pytest.raises(PromptError, match="19 tokens long.*n_ctx=16.*smaller k"):
        tokenize_prompts(too_long, model)
    # The appended answer counts too.
    with pytest.raises(PromptError, match="17 tokens long.*n_ctx=16"):
        p = ICLPrompt("letters", (Example("a", "a"),) * 3, Example("b", "b c"))
        tokenize_prompts([p], model, include_answer=True)


# ---------------------------------------------------------------------------- models


def test_layer_out_of_range(tiny):
    model = tiny.model
    with pytest.raises(LayerError, match="Layer 3 is out of range .* with 3 layers: use 0..2"):
        model.resid_hook(3)
    with pytest.raises(LayerError, match="Layer -4 is out of range"):
        model.z_hook(-4)
    with pytest.raises(LayerError, match="Layer 3"):
        model.head_outputs(torch.zeros(model.n_heads, model.d_head), 3)


def test_missing_model_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="Model folder .*no_such_model' does not exist"):
        load_model(tmp_path / "no_such_model", device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "no_such_model"), device="cpu")


def test_folder_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="is not a model folder: no config.json"):
        load_model(tmp_path, device="cpu")


def test_revision_of_a_plain_folder(tiny):
    with pytest.raises(ValueError, match="revision= applies to hub models and tvlens runs"):
        load_model(tiny.folder, revision="step1", device="cpu")


@pytest.fixture
def checkpoint(make_tiny, symbol_tokenizer, tmp_path):
    """A complete tvlens checkpoint folder (HF model + tokenizer + tvlens.json), a fresh copy."""
    tiny = make_tiny("err-gpt2", "gpt2", symbol_tokenizer, n_layers=1)
    folder = tmp_path / "step-000000005"
    shutil.copytree(tiny.folder, folder)
    (folder / "tvlens.json").write_text(json.dumps({"step": 5}))
    assert load_model(folder, device="cpu").spec.step == 5  # loads while intact
    return folder


def test_checkpoint_without_weights(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete or corrupt \(missing \['model"):
        load_model(checkpoint, device="cpu")


def test_checkpoint_without_tokenizer(checkpoint):
    (checkpoint / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing \['tokenizer.json'\]"):
        load_model(checkpoint, device="cpu")


def _corrupt(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"garbage" * 64)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_checkpoint_with_corrupt_weights(checkpoint, how):
    _corrupt(checkpoint / "model.safetensors", how)
    with pytest.raises(CheckpointError, match="incomplete or corrupt.*SafetensorError"):
        load_model(checkpoint, device="cpu")


def test_plain_folder_with_corrupt_weights(checkpoint):
    (checkpoint / "tvlens.json").unlink()
    _corrupt(checkpoint / "model.safetensors", "truncated")
    with pytest.raises(CheckpointError, match="incomplete or corrupt.*SafetensorError"):
        load_model(checkpoint, device="cpu")


def test_checkpoint_with_corrupt_tvlens_json(checkpoint):
    (checkpoint / "tvlens.json").write_text('{"step": 5')
    with pytest.raises(CheckpointError, match="tvlens.json"):
        load_model(checkpoint, device="cpu")


def test_run_without_the_requested_step(checkpoint):
    run = checkpoint.parent / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"tvlens": "0.1.0", "config": {}}))
    with pytest.raises(CheckpointError, match="has no complete checkpoint yet"):
        load_model(run, device="cpu")
    shutil.move(checkpoint, run / "checkpoints" / checkpoint.name)
    with pytest.raises(CheckpointError, match=r"no checkpoint at step 7.*steps: \[5\]"):
        load_model(run, revision="step7", device="cpu")
    with pytest.raises(CheckpointError, match="Bad revision 'best'"):
        load_model(run, revision="best", device="cpu")
    assert load_model(run, revision=5, device="cpu").spec.step == 5


def test_unknown_hub_model_is_a_clear_error():
    """An HF name that is neither cached nor reachable (tests run with HF_HUB_OFFLINE=1)."""
    with pytest.raises(ModelLoadError, match="not-a-real-org/not-a-model"):
        load_model("not-a-real-org/not-a-model", device="cpu")


# ---------------------------------------------------------------------------- wrong numbers


@pytest.fixture
def one_layer(make_tiny, letters_tokenizer):
    return make_tiny("err-one-layer", "gpt2", letters_tokenizer, n_layers=1)


@pytest.mark.parametrize("top_k", [-3, 0])
def test_function_vector_needs_a_positive_top_k(one_layer, letters_task, top_k):
    """-3 used to slice off the last 3 heads (5 of 8 left); 0 gave a zero vector."""
    from tvlens.errors import ConfigError
    from tvlens.extraction import function_vector

    with pytest.raises(ConfigError, match=f"top_k_heads must be >= 1 .*got {top_k}"):
        function_vector(one_layer.model, letters_task, k=2, n_prompts=2, top_k_heads=top_k)


@pytest.mark.parametrize("k", [0, 1])
def test_shuffled_labels_need_two_demonstrations(one_layer, letters_task, k):
    """With k < 2, clean and corrupted prompts were the same: every effect 0."""
    from tvlens.extraction import function_vector
    from tvlens.patching import patching_prompts

    with pytest.raises(PromptError, match=f"k={k} demonstration.*use k >= 2"):
        function_vector(one_layer.model, letters_task, k=k, n_prompts=2)
    suite = TaskSuite("letters", (letters_task,))
    with pytest.raises(PromptError, match="use k >= 2"):
        patching_prompts(one_layer.model, suite, k=k, n_prompts=2)


def test_unknown_words_are_an_error_not_accuracy_zero(one_layer):
    task = Task.from_pairs("strangers", [("a", "b"), ("c", "d"), ("zebra", "e"), ("f", "g")])
    prompts = sample_prompts(task, k=3, n=1)
    with pytest.raises(PromptError, match="'zebra' .*unknown token '<unk>'"):
        tokenize_prompts(prompts, one_layer.model)


def test_null_output_is_not_the_word_none(tmp_path):
    from tvlens.errors import TaskFormatError

    path = tmp_path / "nulls.json"
    path.write_text(json.dumps([{"input": "a", "output": "b"}, {"input": "c", "output": None}]))
    with pytest.raises(TaskFormatError, match="row 1: output is null"):
        Task.from_json(path)
    path.write_text(json.dumps([{"input": ["a"], "output": "b"}]))
    with pytest.raises(TaskFormatError, match=r'row 0: input is \["a"\]'):
        Task.from_json(path)
    path.write_text(json.dumps([{"input": 1, "output": 2.5}, {"input": "x", "output": "y"}]))
    assert Task.from_json(path).examples[0].output == "2.5"  # numbers are fine


def test_non_utf8_task_file(tmp_path):
    from tvlens.errors import TaskFormatError

    path = tmp_path / "latin1.json"
    path.write_bytes(b'[{"input": "caf\xe9", "output": "x"}]')
    with pytest.raises(TaskFormatError, match="latin1.json' is not UTF-8 text"):
        Task.from_json(path)


def test_multi_token_answers_are_refused_where_one_token_is_read(one_layer, letters_task):
    from tvlens.extraction import function_vector
    from tvlens.patching import AnswerProb, LogitDiff

    two = Task.from_pairs("two", [(w, f"{w} a") for w in "bcdefgh"])
    batch = tokenize_prompts(sample_prompts(two, k=2, n=2), one_layer.model)
    with pytest.raises(PromptError, match="more than one token"):
        AnswerProb.from_batch(batch)
    with pytest.raises(PromptError, match="more than one token"):
        LogitDiff.from_batches(batch, batch)
    with pytest.raises(PromptError, match="more than one token"):
        function_vector(one_layer.model, two, k=2, n_prompts=2)


def test_batch_size_zero(one_layer, letters_task):
    from tvlens.errors import ConfigError
    from tvlens.evaluation.icl import evaluate_icl
    from tvlens.extraction import residual_at_query

    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        evaluate_icl(one_layer.model, letters_task, k=2, n_prompts=2, batch_size=0)
    batch = tokenize_prompts(sample_prompts(letters_task, k=2, n=2), one_layer.model)
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        residual_at_query(one_layer.model, batch, batch_size=0)


def test_family_batch_size_zero():
    from tvlens.errors import ConfigError
    from tvlens.probing.family import TokenFamily

    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        TokenFamily(latent_mapping_suite(2, 8), batch_size=0)


def test_truncated_vector_file_names_the_file(one_layer, letters_task, tmp_path):
    from tvlens.extraction import TaskVector, hendel_task_vector

    tv = hendel_task_vector(one_layer.model, letters_task, k=2, n_prompts=2)
    path = tv.save(tmp_path / "tv.safetensors")
    assert TaskVector.load(path).vectors.shape == tv.vectors.shape
    _corrupt(path, "truncated")
    with pytest.raises(TVLensError, match="tv.safetensors' is truncated or corrupt"):
        TaskVector.load(path)


# ---------------------------------------------------------------------------- loading


def test_folder_without_tokenizer_files(tiny, tmp_path, letters_tokenizer):
    """Used to load with a 1-token placeholder; the error came later, blaming the task."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny.folder / f, bare / f)
    with pytest.raises(ModelLoadError, match="has no tokenizer files.*pass tokenizer="):
        load_model(bare, device="cpu")
    # tokenizer= works: an object, or a folder to load it from.
    for tok in (letters_tokenizer, tiny.folder):
        m = load_model(bare, device="cpu", tokenizer=tok)
        assert m.tokenizer.get_vocab() == letters_tokenizer.get_vocab()
        assert m.to_tokens("a b").tolist() == tiny.model.to_tokens("a b").tolist()


def test_tokenizer_argument_replaces_the_saved_one(tiny):
    """``tokenizer=`` used to be ignored (or to crash for an in-memory tokenizer)."""
    from tvlens.models import build_word_tokenizer

    other = build_word_tokenizer(["p", "q", "r", "s", "t", "u", "v", "w", "z", "o"])
    m = load_model(tiny.folder, device="cpu", tokenizer=other)
    assert m.tokenizer.get_vocab() == other.get_vocab()
    assert m.to_str_tokens(m.to_tokens("p q")[0])[-2:] == ["p", "q"]
    with pytest.raises(ModelLoadError, match="Could not load the tokenizer"):
        load_model(tiny.folder, device="cpu", tokenizer=tiny.folder / "nothing")


def test_bad_devices(tiny):
    from tvlens.errors import ConfigError

    with pytest.raises(ConfigError, match="Unknown device 'bogus'"):
        load_model(tiny.folder, device="bogus")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="Device 'cuda' is not available.*--device cpu"):
            load_model(tiny.folder, device="cuda")


def test_n_ctx_that_does_not_fit(make_tiny, letters_tokenizer):
    """Was reported as 'the checkpoint is incomplete or corrupt'."""
    from tvlens.errors import ConfigError

    gpt2 = make_tiny("gpt2", "gpt2", letters_tokenizer)  # learned positions: n_ctx is fixed
    with pytest.raises(ConfigError, match="n_ctx=8 does not fit.*leave n_ctx unset"):
        load_model(gpt2.folder, device="cpu", n_ctx=8)
    with pytest.raises(ConfigError, match="n_ctx must be >= 1"):
        load_model(gpt2.folder, device="cpu", n_ctx=0)


# ---------------------------------------------------------------------------- data loss


def test_training_into_a_users_folder_is_refused(tmp_path):
    """It used to train into it and overwrite the user's metrics.json."""
    from tvlens.errors import OutputError
    from tvlens.training import train_synthetic
    from tvlens.training.regression import train_regression

    user = tmp_path / "user"
    (user / "checkpoints").mkdir(parents=True)
    (user / "checkpoints" / "keep.txt").write_text("mine")
    (user / "notes.txt").write_text("notes")
    (user / "metrics.json").write_text('{"mine": 1}')
    for train in (train_synthetic, train_regression):
        with pytest.raises(OutputError, match="files tvlens did not write"):
            train(user, preset="tiny", device="cpu", progress=False)
    assert (user / "metrics.json").read_text() == '{"mine": 1}'
    assert sorted(p.name for p in user.rglob("*")) == [
        "checkpoints", "keep.txt", "metrics.json", "notes.txt"
    ]  # fmt: skip


def test_demo_retrain_deletes_only_a_run(tmp_path):
    from tvlens.demo import run_demo
    from tvlens.errors import OutputError

    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="files tvlens did not write"):
        run_demo(tmp_path / "figures", user, preset="tiny", device="cpu", retrain=True)
    assert (user / "thesis.tex").read_text() == "years of work"
    with pytest.raises(OutputError, match="files tvlens did not write"):
        run_demo(user, tmp_path / "run", preset="tiny", device="cpu")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_function_vector_reads_first_tokens_when_asked(one_layer):
    """``answer_token="first"`` (Todd et al.'s reading of multi-token answers): the AIE is the
    probability of each answer's first token, computed as head_aie does by hand."""
    from tvlens.extraction import function_vector
    from tvlens.extraction.function_vectors import head_aie, mean_head_outputs
    from tvlens.tasks.prompts import shuffled_label_variants

    two = Task.from_pairs("two", [(w, f"{w} a") for w in "bcdefgh"])
    _, table = function_vector(one_layer.model, two, k=2, n_prompts=4, seed=3,
                               answer_token="first")  # fmt: skip
    prompts = sample_prompts(two, 2, 4, seed=3, template=one_layer.model.template(None))
    clean = tokenize_prompts(prompts, one_layer.model, padding_side="left")
    corrupted = tokenize_prompts(shuffled_label_variants(prompts, seed=4), one_layer.model,
                                 padding_side="left")  # fmt: skip
    want = head_aie(one_layer.model, corrupted, mean_head_outputs(one_layer.model, clean))
    assert torch.allclose(table.aie, want)
    # beartype refuses it first under the tests; without it, a ConfigError says the same
    with pytest.raises((ConfigError, TypeError), match="answer_token"):
        function_vector(one_layer.model, two, k=2, n_prompts=2, answer_token="last")
