"""Tiny GGUF files written offline with the gguf package, from tiny random HF models: what a
llama.cpp conversion of that model would hold (tensor names by gguf's own name map, llama's
q/k rows in llama.cpp's rotary layout, a byte-level BPE tokenizer in the metadata)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet (Radford et al. 2019): every byte a printable character."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


TOKENS = [*_bytes_to_unicode().values(), "Ġt", "he", "Ġthe", "<s>", "</s>"]
MERGES = ["Ġ t", "h e", "Ġt he"]
BOS, EOS = len(TOKENS) - 2, len(TOKENS) - 1


def _llama_cpp_rope_layout(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp stores llama's q / k rows with each head's rotary halves interleaved."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_gguf(path: Path, arch: str = "llama", seed: int = 0) -> torch.nn.Module:
    """Write a tiny random ``arch`` (llama or qwen2) model to ``path``; returns the HF model."""
    common = dict(vocab_size=len(TOKENS), hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=64, rope_theta=10000.0, bos_token_id=BOS,
                  eos_token_id=EOS)  # fmt: skip
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(
            LlamaConfig(**common, rms_norm_eps=1e-5, tie_word_embeddings=False)
        )
        gguf_arch, eps = gguf.MODEL_ARCH.LLAMA, 1e-5
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common, rms_norm_eps=1e-6, tie_word_embeddings=True))
        gguf_arch, eps = gguf.MODEL_ARCH.QWEN2, 1e-6
        with torch.no_grad():  # Qwen2's q/k/v biases start at zero: make them count
            for n, p in model.named_parameters():
                if n.endswith(".bias"):
                    p.normal_()
    model.eval()
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}")
    w.add_context_length(64)
    w.add_block_count(2)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_freq_base(10000.0)
    if arch == "llama":
        w.add_rope_dimension_count(8)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(TOKENS)
    w.add_token_merges(MERGES)
    w.add_token_types([1] * (len(TOKENS) - 2) + [3, 3])
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    names = gguf.get_tensor_name_map(gguf_arch, 2)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        a = t.detach().float().numpy()
        if arch == "llama" and name.endswith("q_proj.weight"):
            a = _llama_cpp_rope_layout(a, 4)
        if arch == "llama" and name.endswith("k_proj.weight"):
            a = _llama_cpp_rope_layout(a, 2)
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


def write_header_only(path: Path, arch: str) -> None:
    """A GGUF file with an architecture and no tensors (what transformers refuses early)."""
    w = gguf.GGUFWriter(str(path), arch)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
