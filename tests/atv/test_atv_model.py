"""ATV save / load: same logits after a round trip, metadata in the file, a mismatched target
refused with one line; low-rank and frozen generators count what they train."""

import pytest
import torch
from safetensors import safe_open

from tvlens.atv.data import split_queries
from tvlens.atv.model import ATV, ATVMismatchError
from tvlens.errors import CheckpointError
from tvlens.tasks import Task, TaskSuite

SUITE = TaskSuite(
    "pairs",
    (
        Task.from_pairs("one", [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")]),
        Task.from_pairs("two", [("a b", "x"), ("c d", "y"), ("e f", "x"), ("g h", "y")]),
    ),
)


@pytest.fixture(scope="module")
def models(make_tiny, letters_tokenizer):
    target = make_tiny("atv-target", "llama", letters_tokenizer).model
    other = make_tiny("atv-other", "gpt2", letters_tokenizer).model
    gen = make_tiny("atv-gen-neox", "neox", letters_tokenizer, n_layers=2, d_model=16)
    return target, other, gen


@pytest.fixture(scope="module")
def prompts():
    s = split_queries(SUITE, 2, 1, 1)
    return s.train + s.dev + s.test


def _perturbed(atv):
    with torch.no_grad():
        for p in atv.generator.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return atv


def test_round_trip_and_metadata(models, prompts, tmp_path):
    target, _, gen = models
    atv = _perturbed(ATV.build(target, gen.model, layers=[0, 2], scale=0.5, positions="last"))
    path = atv.save(tmp_path / "run")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert "atv_spec" in meta
    spec = ATV.read_spec(path)
    assert spec.layers == [0, 2] and spec.d_model == target.d_model and spec.scale == 0.5
    assert spec.positions == "last" and spec.target["name"].endswith(target.spec.path[-20:])
    loaded = ATV.load(tmp_path / "run", target=target)  # generator loaded from its record
    batch = atv.batch(prompts)
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(batch), atv.logits(batch), atol=0, rtol=0)
    assert loaded.trainable_parameters() == atv.trainable_parameters()


def test_mismatched_target_refused(models, tmp_path):
    target, other, gen = models
    path = ATV.build(target, gen.model).save(tmp_path / "w.safetensors")
    with pytest.raises(ATVMismatchError, match="was trained for target") as e:
        ATV.load(path, target=other)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="No ATV weights"):
        ATV.load(tmp_path / "missing.safetensors", target=target)


def test_low_rank_and_frozen_parameter_counts(models, prompts):
    target, _, gen = models
    L, d, dg = target.n_layers, target.d_model, gen.model.d_model
    frozen = ATV.build(target, gen.model, rank=4, train_generator=False)
    assert frozen.trainable_parameters() == 4 * dg + 4 * L * d + L * d
    full = ATV.build(target, gen.model, train_generator=False)
    assert full.trainable_parameters() == dg * L * d + L * d
    frozen.loss(frozen.batch(prompts)).backward()
    assert all(p.grad is None for p in frozen.generator.lm.parameters())
    assert frozen.generator.expansion.down.weight.grad is not None


def test_generator_made_of_first_blocks(models, prompts):
    target, _, gen = models
    atv = ATV.build(target, gen.model, generator_stop_at_layer=1, pooling="mean")
    b = atv.batch(prompts)
    v = atv.generator(b.gen_tokens, b.gen_mask)
    assert v.shape == (len(prompts), target.n_layers, target.d_model)
    # Blocks after stop_at_layer are not part of the generator: no gradient, not trainable.
    n_trained = atv.trainable_parameters()
    assert n_trained < ATV.build(target, gen.model).trainable_parameters()


def test_methods_loop_scores_alike(models):
    """One loop over methods; an ATV with λ = 0 scores exactly as zero-shot, per task."""
    from tvlens.compare.methods import ICL, ZeroShot, compare
    from tvlens.compare.tuned import ATVMethod

    target, _, gen = models
    splits = split_queries(SUITE, 2, 1, 1)
    atv = ATV.build(target, gen.model, scale=0.0)
    res = compare([ZeroShot(target), ICL(target, k=1), ATVMethod(atv=atv)], splits, "train")
    zs, icl, steered = (r.evaluation.to_dict() for r in res)
    assert steered["tasks"] == zs["tasks"] and zs["tasks"]["one"]["n"] == 2
    assert [r.method for r in res] == ["zero-shot", "icl-1", "atv"]
    assert res[2].trainable_parameters == atv.trainable_parameters() > 0
    assert res[0].trainable_parameters == res[1].trainable_parameters == 0


def test_model_id_keeps_short_and_hub_names(tmp_path, monkeypatch, make_tiny, letters_tokenizer):
    """A pretrained short name (smollm2-135m) or hub name identifies the model as it is; only a
    folder becomes an absolute path (so that a run's eval finds the target it was trained on
    from any working directory)."""
    import copy
    from dataclasses import replace

    from tvlens.atv.model import model_id

    monkeypatch.chdir(tmp_path)
    model = copy.copy(make_tiny("gpt2", "gpt2", letters_tokenizer).model)
    for source, name in (("pretrained", "smollm2-135m"), ("hub", "org/model"), ("folder", "rel")):
        model.spec = replace(model.spec, source=source, name=name)
        want = str(tmp_path / "rel") if source == "folder" else name
        assert model_id(model)["name"] == want
