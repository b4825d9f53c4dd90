"""tvlens's Hendel task vector on SmolLM2-135M against a plain-transformers re-implementation
(the test oracle): the same vectors, the same patched logits, the same verdicts.

The oracle writes its own prompt strings (``<|endoftext|>`` + ``x -> y`` lines), runs one
unpadded prompt at a time through ``LlamaForCausalLM`` with forward hooks on the decoder
layers, and shares nothing with tvlens but the choice of demonstrations and queries.
"""

from __future__ import annotations

import pytest
import torch

from tvlens.extraction import hendel_task_vector
from tvlens.injection.sweep import layer_sweep_logits
from tvlens.tasks import get_suite, sample_prompts

LAYERS = [2, 10, 18]
K = 4


@pytest.fixture(scope="module")
def hf_model(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = smollm2.spec.path or smollm2.spec.origin.get("hub_name")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(src)


def _ids(tok, text: str) -> list[int]:
    # SmolLM2's document-start token, then the text as the tokenizer splits it alone.
    return [0, *tok(text, add_special_tokens=False)["input_ids"]]


def _layer_out(output):
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def _residual_after(model, ids: list[int], layer: int) -> torch.Tensor:
    got = {}

    def keep(module, args, output):
        got["h"] = _layer_out(output)[0, -1].clone()

    handle = model.model.layers[layer].register_forward_hook(keep)
    try:
        model(torch.tensor([ids]))
    finally:
        handle.remove()
    return got["h"]


@torch.no_grad()
def _patched_logits(model, ids: list[int], layer: int, vector: torch.Tensor) -> torch.Tensor:
    def write(module, args, output):
        h = _layer_out(output).clone()
        h[0, -1] = vector
        return (h, *output[1:]) if isinstance(output, tuple) else h

    handle = model.model.layers[layer].register_forward_hook(write)
    try:
        return model(torch.tensor([ids])).logits[0, -1]
    finally:
        handle.remove()


@pytest.mark.smollm2
@pytest.mark.parametrize("task_name", ["antonyms", "uppercase"])
def test_hendel_task_vector_matches_plain_transformers(smollm2, hf_model, task_name):
    model, tok = hf_model
    task = get_suite("words")[task_name]
    train, test = task.split((0.7, 0.3), seed=0)
    n_extract, n_test = 6, 6

    # tvlens: mean residual over k-shot train prompts, then written into zero-shot prompts.
    tv = hendel_task_vector(smollm2, train, K, n_extract, seed=1, layers=LAYERS)
    zero_shot = sample_prompts(train, 0, n_test, seed=2, queries=test)
    ours = layer_sweep_logits(smollm2, zero_shot, tv.vectors, LAYERS)  # [query, layer, vocab]

    # The oracle, on the same demonstrations and queries.
    extract = sample_prompts(train, K, n_extract, seed=1)
    for li, layer in enumerate(LAYERS):
        texts = [
            "\n".join([*(f"{d.input} -> {d.output}" for d in p.demonstrations),
                       f"{p.query.input} ->"])
            for p in extract
        ]  # fmt: skip
        vec = torch.stack([_residual_after(model, _ids(tok, t), layer) for t in texts]).mean(0)
        torch.testing.assert_close(tv.vectors[li], vec, atol=2e-4, rtol=1e-4)
        for qi, p in enumerate(zero_shot):
            ref = _patched_logits(model, _ids(tok, f"{p.query.input} ->"), layer, vec)
            torch.testing.assert_close(ours[qi, li], ref, atol=2e-3, rtol=1e-3)
            answer = tok(" " + p.answer, add_special_tokens=False)["input_ids"][0]
            assert (ours[qi, li].argmax() == answer) == (ref.argmax() == answer)
