"""One name per concept (the table is docs/api/names.md): old keyword names keep working,
with a :class:`DeprecationWarning`, through :func:`renamed`."""

from __future__ import annotations

import warnings
from typing import Any

from tvlens.errors import ConfigError


def renamed(old: str, old_value: Any, new: str, new_value: Any, default: Any = None) -> Any:
    """The value of ``new``, or of its old name ``old`` (warned); both given is an error.

    ``default``: the new argument's default, so that ``old`` given alone is not taken for a
    clash with it."""
    if old_value is None:
        return new_value
    if new_value is not None and new_value != default:
        raise ConfigError(f"{old} is the old name of {new}: pass only {new}.")
    warnings.warn(f"{old}= is renamed {new}=.", DeprecationWarning, stacklevel=3)
    return old_value
