"""Errors that name the problem and the fix.

Every user-facing failure in tvlens raises a subclass of :class:`TVLensError`, so that a
notebook shows one line saying what is wrong instead of a stack trace from inside torch.
Each subclass also derives from the built-in exception a caller would naturally catch.
"""

from __future__ import annotations


class TVLensError(Exception):
    """Base class for all tvlens errors."""


class UnknownTaskError(TVLensError, KeyError):
    """A task or suite name that does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class EmptyTaskError(TVLensError, ValueError):
    """A task with no examples, or too few for what was asked."""


class TaskFormatError(TVLensError, ValueError):
    """A task file in none of the accepted shapes (a list of ``{"input", "output"}`` objects,
    one ``{input: output}`` object, or named splits ``{"train", "valid", "test"}`` of either)."""


class PromptError(TVLensError, ValueError):
    """A prompt that cannot be built or run (too long, multi-token answer, ...)."""


class ModelLoadError(TVLensError, OSError):
    """A model that cannot be found or loaded."""


class CheckpointError(TVLensError, OSError):
    """A checkpoint folder that is missing, incomplete or corrupt."""


class LayerError(TVLensError, IndexError):
    """A layer (or head) index out of range for the model."""


class ConfigError(TVLensError, ValueError):
    """An option or argument value that is not valid (unknown choice, out of range, ...)."""


class OutputError(TVLensError, OSError):
    """An output folder that cannot be written, or that holds something tvlens did not write."""
