"""ATV's steering against an independent oracle in plain transformers + torch, written after
the official ATV code (Kang et al. 2025, "Adaptive Task Vectors for Large Language Models"):
the generator's last real token after its final norm goes through one Linear to
``n_layers * d_model``, is reshaped to one vector per layer, and ``scale * v_l`` is added to the
output of decoder block ``l`` (every position for ``"all"``, the query position for ``"last"``).
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from tvlens.atv.data import split_queries
from tvlens.atv.model import ATV
from tvlens.tasks import Task, TaskSuite

SUITE = TaskSuite(
    "pairs",
    (
        Task.from_pairs("one", [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h"), ("x", "y")]),
        Task.from_pairs("two", [("a b", "x"), ("c d e", "y"), ("e f", "x"), ("g", "y")]),
    ),
)
SCALE = 0.7


def _blocks(hf):
    return hf.transformer.h if hasattr(hf, "transformer") else hf.model.layers


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _oracle_logits(
    target_dir, gen_dir, expansion, batch, positions: str, stop: int | None
) -> torch.Tensor:
    gen = AutoModelForCausalLM.from_pretrained(gen_dir).eval()
    tgt = AutoModelForCausalLM.from_pretrained(target_dir).eval()
    gm = batch.gen_mask
    out = gen(
        batch.gen_tokens, attention_mask=gm, position_ids=_position_ids(gm),
        output_hidden_states=True,
    )  # fmt: skip
    # The official generator: after the final norm. A generator cut at ``stop`` blocks reads
    # the residual stream entering block ``stop`` (HF's hidden_states[stop]), no final norm.
    h = out.hidden_states[-1] if stop is None else out.hidden_states[stop]
    last = gm.shape[1] - 1 - gm.flip(-1).argmax(-1)
    pooled = h[torch.arange(h.shape[0]), last]
    n_layers, d_model = tgt.config.num_hidden_layers, tgt.config.hidden_size
    v = (pooled @ expansion.weight.T + expansion.bias).view(-1, n_layers, d_model)

    mask = batch.attention_mask
    where = torch.zeros_like(mask, dtype=torch.float)
    if positions == "all":
        where[:] = 1.0  # the official code adds everywhere; pads are masked out of attention
    else:
        where[torch.arange(mask.shape[0]), batch.query_pos] = 1.0

    def hook_for(layer: int):
        def hook(module, args, output):
            hs = output[0] if isinstance(output, tuple) else output
            hs = hs + SCALE * where[..., None] * v[:, layer][:, None, :]
            return (hs, *output[1:]) if isinstance(output, tuple) else hs

        return hook

    handles = [b.register_forward_hook(hook_for(i)) for i, b in enumerate(_blocks(tgt))]
    try:
        logits = tgt(batch.tokens, attention_mask=mask, position_ids=_position_ids(mask)).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits


@pytest.fixture(scope="module")
def generator(make_tiny, letters_tokenizer):
    return make_tiny("atv-oracle-gen", "gpt2", letters_tokenizer, n_layers=2, d_model=16)


@pytest.fixture(scope="module")
def prompts():
    s = split_queries(SUITE, 2, 1, 1)
    return s.train + s.dev + s.test


@pytest.mark.parametrize("stop", [None, 1])
@pytest.mark.parametrize("positions", ["all", "last"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_atv_logits_match_plain_hf_oracle(
    arch, positions, stop, make_tiny, letters_tokenizer, generator, prompts
):
    target = make_tiny(f"atv-oracle-{arch}", arch, letters_tokenizer)
    atv = ATV.build(
        target.model,
        generator.model,
        scale=SCALE,
        positions=positions,
        generator_stop_at_layer=stop,
    )
    with torch.no_grad():
        torch.manual_seed(1)
        for p in atv.generator.expansion.parameters():
            # Small enough that the final norm does not saturate: a 1% error in the scale
            # moves the logits by 6e-4 to 2e-3, well above the tolerance.
            p.copy_(0.02 * torch.randn_like(p))
    batch = atv.batch(prompts, padding_side="left")
    mask = batch.attention_mask.bool()
    assert not mask.all(), "the batch must be padded for the test to check padding"
    with torch.no_grad():
        got = atv.logits(batch)
        want = _oracle_logits(
            target.folder, generator.folder, atv.generator.expansion, batch, positions, stop
        )
        unsteered = _oracle_logits(
            target.folder, generator.folder, _Zero(atv.generator.expansion), batch, positions, stop
        )
    # The steering must matter for the comparison to mean something.
    assert (want[mask] - unsteered[mask]).abs().max() > 1e-2
    torch.testing.assert_close(got[mask], want[mask], atol=1e-4, rtol=1e-4)


class _Zero:
    """An expansion with the same shapes and all-zero weights (no steering)."""

    def __init__(self, lin):
        self.weight, self.bias = torch.zeros_like(lin.weight), torch.zeros_like(lin.bias)
