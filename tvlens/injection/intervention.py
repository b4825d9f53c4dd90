"""Applies what a steering method writes: :class:`Intervention` s of :class:`Write` s and
:func:`apply_intervention` (one context manager over the bridge's ``hooks``, removed on exit and
on error), defined in :mod:`tvlens.extraction.writes`, where extraction methods make and tune
them; offered here, in the injection stage, beside :func:`tvlens.injection.inject`."""

from tvlens.extraction.writes import (
    OPS,
    POINTS,
    Intervention,
    InterventionError,
    Op,
    Point,
    Write,
    apply_intervention,
    check_intervention,
    hook_name,
    icv_shift,
    stack_rows,
    write_hook,
)

__all__ = [
    "OPS",
    "POINTS",
    "Intervention",
    "InterventionError",
    "Op",
    "Point",
    "Write",
    "apply_intervention",
    "check_intervention",
    "hook_name",
    "icv_shift",
    "stack_rows",
    "write_hook",
]
