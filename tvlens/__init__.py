"""tvlens: mechanistic interpretability of task vectors on TransformerLens 4.x."""

__version__ = "0.1.0"

# Before anything imports torch: OpenMP reads its wait policy once (tvlens.runtime).
from tvlens.runtime import set_wait_policy  # noqa: E402

set_wait_policy()

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
