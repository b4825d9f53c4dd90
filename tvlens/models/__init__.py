"""Model layer: the loaded model (TVModel), TransformerBridge loading, tvlens checkpoints, tiny HF
models."""

from tvlens.models.hf import ARCHITECTURES, build_hf_model, save_hf_model
from tvlens.models.loading import default_device, load_checkpoints, load_model
from tvlens.models.tokenizer import build_word_tokenizer
from tvlens.models.tvmodel import ModelSpec, TVModel
from tvlens.runs.checkpoints import Checkpoint, list_checkpoints, resolve_checkpoint

__all__ = [
    "ARCHITECTURES",
    "Checkpoint",
    "ModelSpec",
    "TVModel",
    "build_hf_model",
    "build_word_tokenizer",
    "default_device",
    "list_checkpoints",
    "load_checkpoints",
    "load_model",
    "resolve_checkpoint",
    "save_hf_model",
]
