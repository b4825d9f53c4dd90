"""tvlens: mechanistic interpretability of task vectors on TransformerLens 4.x."""

__version__ = "0.1.0"

from tvlens.errors import (  # noqa: E402
    CheckpointError,
    EmptyTaskError,
    LayerError,
    ModelLoadError,
    PromptError,
    TaskFormatError,
    TVLensError,
    UnknownTaskError,
)

__all__ = [
    "CheckpointError",
    "EmptyTaskError",
    "LayerError",
    "ModelLoadError",
    "PromptError",
    "TaskFormatError",
    "TVLensError",
    "UnknownTaskError",
    "__version__",
]
