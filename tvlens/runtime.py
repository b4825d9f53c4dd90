"""How many CPU threads torch uses, and how its OpenMP threads wait: one policy, set here.

torch's default on a CPU is one intra-op thread per core, in an OpenMP team whose idle
threads spin-wait for the next parallel region. On a machine that is doing anything else (a
browser, an IDE, another job) a competing process takes a core from that team: every op then
waits for the descheduled thread, and run time multiplies (issue 33: the ``tiny`` preset took
2.65x its idle time with one competing process on 2 cores, 15x under a load average of 4-6;
``bench/threads.py``: 848 s against 9.8 s idle). tvlens's models are small, so one thread is as
fast on an idle machine (9.2 s against 9.8 s); the numbers are in
``docs/results/benchmarks.md``.

The policy, in order:

* ``threads`` given to :func:`configure_threads` (the CLI's ``--threads``);
* else the ``TVLENS_THREADS`` environment variable: a number, or ``torch`` to leave torch's
  defaults (and OpenMP's environment) untouched;
* else :data:`DEFAULT_THREADS`.

OpenMP reads its wait policy once, when torch loads it: :func:`set_wait_policy` (run on
``import tvlens``) sets ``OMP_WAIT_POLICY=PASSIVE`` in the environment, which takes effect
only if torch was not imported before tvlens. The thread count takes effect at any time.
A user's own ``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` is kept.
"""

from __future__ import annotations

import os
import sys

from tvlens.errors import TVLensError

ENV = "TVLENS_THREADS"
TORCH_DEFAULT = "torch"
# Intra-op threads unless told otherwise (measured: docs/results/benchmarks.md).
DEFAULT_THREADS = 1

_configured: int | None = None


def _env_policy() -> str | None:
    value = os.environ.get(ENV, "").strip().lower()
    return value or None


def set_wait_policy() -> None:
    """Ask OpenMP's idle threads to sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``),
    unless the user set a policy or ``TVLENS_THREADS=torch``; effective only before torch
    is imported."""
    if _env_policy() == TORCH_DEFAULT or "torch" in sys.modules:
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_threads(value: str | int | None) -> int | None:
    """``None`` / ``"torch"`` -> None (torch's default); a positive number -> that number."""
    if value is None or str(value).strip().lower() in ("", TORCH_DEFAULT):
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise TVLensError(
            f"threads must be a positive number or 'torch' (torch's default), got {value!r}: "
            f"set --threads or {ENV} to e.g. 1."
        )
    return n


def default_threads() -> int | None:
    """The thread count tvlens uses when not told (None: torch's default): ``TVLENS_THREADS``,
    else :data:`DEFAULT_THREADS`; an explicit ``OMP_NUM_THREADS`` is the user's choice."""
    env = _env_policy()
    if env is not None:
        return parse_threads(env)
    if os.environ.get("OMP_NUM_THREADS") and os.environ.get("OMP_NUM_THREADS") != "":
        return None  # torch already follows the user's OMP_NUM_THREADS
    return DEFAULT_THREADS


def configure_threads(threads: str | int | None = None, force: bool = False) -> int:
    """Apply the thread policy (see the module docstring) and return torch's thread count.

    ``threads`` (a number, or ``"torch"``) wins over the environment; without it the policy
    is applied once per process (``force=True`` applies it again), so that a user's own
    ``torch.set_num_threads`` after the first call is kept."""
    global _configured
    import torch

    if threads is not None:
        n = parse_threads(threads)
        if n is not None:
            torch.set_num_threads(n)
        _configured = torch.get_num_threads()
        return _configured
    if _configured is None or force:
        n = default_threads()
        if n is not None:
            torch.set_num_threads(n)
        _configured = torch.get_num_threads()
    return torch.get_num_threads()
