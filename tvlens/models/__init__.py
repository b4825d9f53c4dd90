"""Model layer: the loaded model (TVModel), TransformerBridge loading, tvlens checkpoints, tiny HF
models. Names are imported lazily, so that a light submodule (``tvlens.models.archs``) does
not load torch and TransformerLens."""

from importlib import import_module
from typing import Any

_NAMES = {
    "ARCHITECTURES": "tvlens.models.archs",
    "build_hf_model": "tvlens.models.hf",
    "save_hf_model": "tvlens.models.hf",
    "default_device": "tvlens.models.loading",
    "load_checkpoints": "tvlens.models.loading",
    "load_model": "tvlens.models.loading",
    "model_info": "tvlens.models.loading",
    "build_word_tokenizer": "tvlens.models.tokenizer",
    "ModelSpec": "tvlens.models.tvmodel",
    "TVModel": "tvlens.models.tvmodel",
    "run_from": "tvlens.models.resume",
    "Checkpoint": "tvlens.runs.checkpoints",
    "list_checkpoints": "tvlens.runs.checkpoints",
    "resolve_checkpoint": "tvlens.runs.checkpoints",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'tvlens.models' has no attribute {name!r}")
