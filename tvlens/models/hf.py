"""Small HF causal LMs built from a config (random weights), for training and tests.

tvlens trains its own models as HF models saved as HF folders: one
loading path (``boot_transformers``) for everything, an exact KV cache, and peft baselines.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    PreTrainedModel,
)

from tvlens.models.archs import (  # noqa: E402,F401  (public here too)
    ARCHITECTURES,
    POST_NORM_ARCHITECTURES,
    SLIDING_WINDOW_ARCHITECTURES,
    Architecture,
)


def build_hf_model(
    arch: Architecture,
    vocab_size: int,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_ctx: int = 128,
    n_kv_heads: int | None = None,
    d_mlp: int | None = None,
    seed: int = 0,
    bos_token_id: int = 1,
    pad_token_id: int = 0,
    sliding_window: int | None = None,
) -> PreTrainedModel:
    """A randomly initialised causal LM with no dropout, in eval mode.

    ``n_kv_heads`` < ``n_heads`` gives grouped-query attention (llama, gemma2, olmo2,
    mistral). ``sliding_window`` (gemma2: every other layer, from the first; mistral: every
    layer) limits how far back a token attends; default: the context length for gemma2,
    none for mistral.
    """
    if sliding_window is not None and arch not in SLIDING_WINDOW_ARCHITECTURES:
        raise ValueError(
            f"sliding_window applies to {SLIDING_WINDOW_ARCHITECTURES}, not to {arch!r}."
        )
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}.")
    d_mlp = d_mlp or 4 * d_model
    common = {
        "vocab_size": vocab_size,
        "bos_token_id": bos_token_id,
        "eos_token_id": bos_token_id,
        "pad_token_id": pad_token_id,
    }
    if arch == "gpt2":
        cfg = GPT2Config(
            n_positions=n_ctx,
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            n_inner=d_mlp,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
        cls = GPT2LMHeadModel
    elif arch == "llama":
        kv = n_kv_heads or n_heads
        if n_heads % kv:
            raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={kv}.")
        cfg = LlamaConfig(
            hidden_size=d_model,
            intermediate_size=d_mlp,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=kv,
            max_position_embeddings=n_ctx,
            tie_word_embeddings=False,
            **common,
        )
        cls = LlamaForCausalLM
    elif arch == "neox":
        cfg = GPTNeoXConfig(
            hidden_size=d_model,
            intermediate_size=d_mlp,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            max_position_embeddings=n_ctx,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            rotary_pct=0.25,
            **common,
        )
        cls = GPTNeoXForCausalLM
    elif arch in ("gemma2", "olmo2", "mistral", "gemma3", "qwen2", "qwen3"):
        kv = n_kv_heads or n_heads
        if n_heads % kv:
            raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={kv}.")
        shared = {
            "hidden_size": d_model,
            "intermediate_size": d_mlp,
            "num_hidden_layers": n_layers,
            "num_attention_heads": n_heads,
            "num_key_value_heads": kv,
            "max_position_embeddings": n_ctx,
            "tie_word_embeddings": False,
            "attention_dropout": 0.0,
            **common,
        }
        if arch == "gemma2":
            cfg = Gemma2Config(
                head_dim=d_model // n_heads,
                query_pre_attn_scalar=d_model // n_heads,
                sliding_window=sliding_window or n_ctx,
                **shared,
            )
            cls = Gemma2ForCausalLM
        elif arch == "gemma3":
            # Gemma-3: q/k norms, norms before and after attention and MLP, and local layers
            # (a sliding window) between global ones: layer_types every other layer here.
            from transformers import Gemma3ForCausalLM, Gemma3TextConfig

            cfg = Gemma3TextConfig(
                head_dim=d_model // n_heads,
                query_pre_attn_scalar=d_model // n_heads,
                sliding_window=sliding_window or n_ctx,
                layer_types=[("sliding_attention" if i % 2 == 0 else "full_attention")
                             for i in range(n_layers)],
                **shared,
            )  # fmt: skip
            cls = Gemma3ForCausalLM
        elif arch in ("qwen2", "qwen3"):
            # Qwen2: biases on q, k, v; Qwen3: no biases, q/k norms.
            from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

            if arch == "qwen2":
                cfg, cls = Qwen2Config(**shared), Qwen2ForCausalLM
            else:
                cfg = Qwen3Config(head_dim=d_model // n_heads, **shared)
                cls = Qwen3ForCausalLM
        elif arch == "olmo2":
            cfg = Olmo2Config(**shared)
            cls = Olmo2ForCausalLM
        else:
            cfg = MistralConfig(
                head_dim=d_model // n_heads, sliding_window=sliding_window, **shared
            )
            cls = MistralForCausalLM
    else:
        raise ValueError(f"Unknown architecture {arch!r}; use one of {ARCHITECTURES}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    return model.eval()


def save_hf_model(model: PreTrainedModel, tokenizer, folder: str | Path) -> Path:
    """``save_pretrained`` model and tokenizer side by side (what ``boot_transformers`` reads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@contextmanager
def quiet_transformers():
    """Silence transformers' per-call progress bars ("Loading weights", "Writing model
    shards"): with a checkpoint every few seconds they would drown tvlens's own bar."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
