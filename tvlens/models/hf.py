"""Small HF causal LMs built from a config (random weights), for training and tests.

tvlens trains its own models as HF models saved as HF folders: one
loading path (``boot_transformers``) for everything, an exact KV cache, and peft baselines.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import PreTrainedModel

from tvlens.models.archs import (  # noqa: E402,F401  (public here too)
    ARCHITECTURES,
    POST_NORM_ARCHITECTURES,
    SLIDING_WINDOW_ARCHITECTURES,
    Architecture,
)
from tvlens.models.families import Sizes, get_family
from tvlens.runs import MODEL, in_run_folder, prepare_out_dir


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

    ``arch`` names a record of :mod:`tvlens.models.families`, which builds the config.
    ``n_kv_heads`` < ``n_heads`` gives grouped-query attention (every family but gpt2 and
    neox). ``sliding_window`` (gemma2: every other layer, from the first; mistral: every
    layer) limits how far back a token attends; default: the context length for gemma2,
    none for mistral.
    """
    if sliding_window is not None and arch not in SLIDING_WINDOW_ARCHITECTURES:
        raise ValueError(
            f"sliding_window applies to {SLIDING_WINDOW_ARCHITECTURES}, not to {arch!r}."
        )
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}.")
    family = get_family(arch)
    if family is None:
        raise ValueError(f"Unknown architecture {arch!r}; use one of {ARCHITECTURES}.")
    kv = n_kv_heads or n_heads
    if family.grouped_query and n_heads % kv:
        raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={kv}.")
    common = {
        "vocab_size": vocab_size,
        "bos_token_id": bos_token_id,
        "eos_token_id": bos_token_id,
        "pad_token_id": pad_token_id,
    }
    sizes = Sizes(n_layers, d_model, n_heads, n_ctx, kv, d_mlp or 4 * d_model, sliding_window,
                  common)  # fmt: skip
    cfg, cls = family.hf_config(sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    return model.eval()


def save_hf_model(model: PreTrainedModel, tokenizer, folder: str | Path) -> Path:
    """``save_pretrained`` model and tokenizer side by side (what ``boot_transformers`` reads).

    ``folder`` follows the folder rule (:func:`tvlens.runs.prepare_out_dir`, kind ``model``):
    new, empty, or a model folder this function wrote (its signature); a folder holding
    files tvlens did not write raises :class:`~tvlens.errors.OutputError` and is left as it
    was. A folder inside a tvlens run (a training run's checkpoints) is the run's own."""
    folder = Path(folder)
    if not in_run_folder(folder):
        prepare_out_dir(folder, MODEL)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def get_peft_model_quietly(model, config):
    """``peft.get_peft_model(model, config)`` without the deprecation one library raises
    about another (peft reads transformers' ``is_gradient_checkpointing``, renamed in
    transformers 5): not the user's to act on, and it would print in every notebook that
    trains LoRA. Any other warning still shows."""
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning
        )
        return get_peft_model(model, config)


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
