"""What tvlens knows about one model family, in one record: how to build a tiny random one for
training and tests, which of its matrices LoRA adapts, which ones write into the residual
stream, and whether its blocks break the shortcuts patching is tempted to take (a norm after
attention, a sliding window). TransformerLens keeps one adapter file per family the same way.

Torch-free: the configs validate an architecture name against the registry at import time, so
a record imports transformers only when it builds a model (:meth:`ModelFamily.hf_config`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Most HF decoders (Llama and its descendants) name their matrices alike: the defaults of a
# record, and what the tuned baselines assume for a model type no record knows.
LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLAMA_QUERY_VALUE = ("q_proj", "v_proj")
LLAMA_RESIDUAL_WRITE = ("down_proj",)


@dataclass(frozen=True)
class Sizes:
    """The sizes :func:`tvlens.models.hf.build_hf_model` was asked for, resolved (``n_kv_heads``
    and ``d_mlp`` filled in), and the config fields every family shares (``common``: vocabulary
    and special token ids)."""

    n_layers: int
    d_model: int
    n_heads: int
    n_ctx: int
    n_kv_heads: int
    d_mlp: int
    sliding_window: int | None
    common: dict[str, Any] = field(default_factory=dict)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def grouped(self) -> dict[str, Any]:
        """The config fields of a Llama-style decoder with grouped-query attention and no
        dropout (every family after GPT-2 and NeoX)."""
        return {
            "hidden_size": self.d_model,
            "intermediate_size": self.d_mlp,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "max_position_embeddings": self.n_ctx,
            "tie_word_embeddings": False,
            "attention_dropout": 0.0,
            **self.common,
        }


@dataclass(frozen=True)
class ModelFamily:
    """One model family.

    ``name`` is tvlens's architecture name (``TrainConfig.arch``), ``model_type`` the HF
    ``config.model_type`` of a loaded model. ``hf_config(sizes)`` returns the HF config and the
    causal-LM class of a tiny random model. ``lora_targets``: every attention and MLP matrix
    (early-block fine-tuning); ``lora_query_value``: the query and value projections (fused
    with the key's in GPT-2 and NeoX: LoRA then adapts the fused matrix); ``residual_write``:
    each block's MLP output projection, the map that writes into the residual stream where ATV
    adds its vector (a regex where the plain name would also match the attention's output).
    ``grouped_query``: takes ``n_kv_heads``; ``conv1d``: stores weights transposed (GPT-2's
    ``Conv1D``, peft's ``fan_in_fan_out``). ``post_norm``: a norm on the attention output
    before it reaches the residual stream; ``sliding_window``: some layers attend within a
    window (their KV caches drop old positions). Both are *expectations*: patching detects them
    on the loaded model (:mod:`tvlens.models.adapter`), and the tests check the two agree."""

    name: str
    model_type: str
    hf_config: Callable[[Sizes], tuple[Any, type]]
    lora_targets: tuple[str, ...] = LLAMA_LORA_TARGETS
    lora_query_value: tuple[str, ...] = LLAMA_QUERY_VALUE
    residual_write: str | tuple[str, ...] = LLAMA_RESIDUAL_WRITE
    grouped_query: bool = True
    conv1d: bool = False
    post_norm: bool = False
    sliding_window: bool = False


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Adds ``family`` to the registry (by its ``name``) and returns it."""
    if family.name in _FAMILIES and _FAMILIES[family.name] != family:
        raise ValueError(f"A model family named {family.name!r} is already registered.")
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, ModelFamily]:
    """Every registered family by name, in registration order."""
    return dict(_FAMILIES)


def get_family(name: str) -> ModelFamily | None:
    """The family tvlens calls ``name`` (``"neox"``), or None."""
    return _FAMILIES.get(name)


def family_of_model_type(model_type: str) -> ModelFamily | None:
    """The family of a loaded model, from its HF ``config.model_type`` (``"gpt_neox"``), or
    None for a model type no record knows."""
    return next((f for f in _FAMILIES.values() if f.model_type == model_type), None)


def lora_query_value(model_type: str) -> list[str]:
    """peft ``target_modules`` of the query and value projections of a loaded model (Llama's
    names for a model type no record knows)."""
    family = family_of_model_type(model_type)
    return list(family.lora_query_value if family else LLAMA_QUERY_VALUE)


def residual_write_sites(model_type: str) -> str | list[str]:
    """peft ``target_modules`` of each block's MLP output projection (a regex, or names;
    Llama's for a model type no record knows)."""
    family = family_of_model_type(model_type)
    sites = family.residual_write if family else LLAMA_RESIDUAL_WRITE
    return sites if isinstance(sites, str) else list(sites)
