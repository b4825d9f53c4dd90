"""TaskVector: safetensors round trip with its metadata, and clear errors on misuse."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tvlens import __version__
from tvlens.errors import LayerError, TVLensError
from tvlens.extraction import TaskVector, VectorMismatchError, hendel_task_vector
from tvlens.runs.portable import portable


@pytest.fixture(scope="module")
def tiny(make_tiny, letters_tokenizer):
    """The architecture does not matter here: gpt2 only (the session's ``tiny[gpt2]``)."""
    return make_tiny("gpt2", "gpt2", letters_tokenizer)


@pytest.fixture(scope="module")
def small(make_tiny, letters_tokenizer):
    """A model with d_model=16, next to the d_model=32 ``tiny`` models."""
    return make_tiny("gpt2-d16", "gpt2", letters_tokenizer, d_model=16)


def _vector(model_name: str, d_model: int = 32) -> TaskVector:
    return TaskVector(
        vectors=torch.randn(2, d_model, generator=torch.Generator().manual_seed(0)),
        layers=(2, 0),
        model_name=model_name,
        task="letters",
        method="fv",
        n_prompts=7,
        revision="step10",
        info={"heads": [[0, 1], [2, 3]], "k": 4, "nested": {"a": [1.5, None]}},
    )


def test_save_writes_tensor_header_and_sidecar(tiny, tmp_path):
    tv = _vector(tiny.model.name)
    path = tv.save(tmp_path / "vecs" / "letters")  # suffix added, folders created
    assert path == tmp_path / "vecs" / "letters.safetensors" and path.is_file()
    sidecar = json.loads(path.with_suffix(".json").read_text())
    # the sidecar carries tvlens's signature (its version) so it is never taken for a user's
    # paths written portable (the model's folder here is a temporary one)
    expected = {**tv.metadata(), "layers": [2, 0], "d_model": 32, "tvlens": __version__}
    assert sidecar == portable(expected)
    assert sidecar["info"] == {"heads": [[0, 1], [2, 3]], "k": 4, "nested": {"a": [1.5, None]}}
    with safe_open(str(path), framework="pt") as f:
        assert {**json.loads(f.metadata()["tvlens"]), "tvlens": __version__} == sidecar
        assert torch.equal(f.get_tensor("vectors"), tv.vectors)


def test_load_gives_layers_as_tuple(tiny, tmp_path):
    path = _vector(tiny.model.name).save(tmp_path / "v.safetensors")
    assert TaskVector.load(path).layers == (2, 0)


def test_save_load_round_trip(tiny, tmp_path):
    tv = _vector(tiny.model.name)
    path = tv.save(tmp_path / "vecs" / "letters")
    back = TaskVector.load(path, tiny.model)
    assert torch.equal(back.vectors, tv.vectors)
    for name in (
        "layers",
        "model_name",
        "task",
        "method",
        "n_prompts",
        "revision",
        "position",
        "where",
        "info",
    ):
        assert getattr(back, name) == getattr(tv, name), name
    assert back.layers == (2, 0) and back.d_model == 32
    assert torch.equal(back.at(0), tv.vectors[1]) and torch.equal(back.at(2), tv.vectors[0])
    sel = back.select(0)
    assert sel.layers == (0,) and torch.equal(sel.vectors[0], tv.vectors[1])


def test_extracted_vector_round_trip(tiny, letters_task, tmp_path):
    tv = hendel_task_vector(tiny.model, letters_task, k=2, n_prompts=4)
    back = TaskVector.load(tv.save(tmp_path / "h.safetensors"), tiny.model)
    assert torch.equal(back.vectors, tv.vectors)
    assert back.metadata() == tv.metadata()


def test_other_d_model_names_both_sizes(small, tiny, letters_task):
    tv = hendel_task_vector(small.model, letters_task, k=2, n_prompts=4)
    assert tv.d_model == 16
    with pytest.raises(VectorMismatchError, match=r"d_model=16.*d_model=32"):
        tv.check_compatible(tiny.model, strict_name=False)
    tv.check_compatible(small.model)


def test_load_into_other_d_model_names_both_sizes(small, tiny, letters_task, tmp_path):
    tv = hendel_task_vector(small.model, letters_task, k=2, n_prompts=4)
    path = tv.save(tmp_path / "small.safetensors")
    assert TaskVector.load(path, small.model).d_model == 16
    with pytest.raises(VectorMismatchError, match=r"d_model=16.*d_model=32"):
        TaskVector.load(path, tiny.model, strict_name=False)


def test_model_name_must_match_unless_relaxed(tiny):
    tv = _vector("someone/else")
    with pytest.raises(VectorMismatchError, match="someone/else"):
        tv.check_compatible(tiny.model)
    tv.check_compatible(tiny.model, strict_name=False)


def test_load_checks_model_name_unless_relaxed(tiny, tmp_path):
    path = _vector("someone/else").save(tmp_path / "v.safetensors")
    with pytest.raises(VectorMismatchError, match="someone/else"):
        TaskVector.load(path, tiny.model)
    assert TaskVector.load(path, tiny.model, strict_name=False).model_name == "someone/else"
    assert TaskVector.load(path).model_name == "someone/else"  # no model: nothing to check


def test_missing_layer_and_bad_shapes(tiny):
    tv = _vector(tiny.model.name)
    with pytest.raises(LayerError, match=r"layers \(2, 0\), not 1"):
        tv.at(1)
    with pytest.raises(VectorMismatchError, match="one row per layer"):
        TaskVector(torch.zeros(3, 8), (0, 1), "m", "t", "hendel", 1)


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(TVLensError, match="No vector file"):
        TaskVector.load(tmp_path / "nope.safetensors")
    save_file({"vectors": torch.zeros(1, 4)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(TVLensError, match="no tvlens metadata"):
        TaskVector.load(tmp_path / "plain.safetensors")
