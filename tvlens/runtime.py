"""How many CPU threads torch uses: one policy, set here.

torch's default on a CPU is one intra-op thread per core, in an OpenMP team that waits at
every parallel operation for all its threads. On a machine that is doing anything else (a
browser, an IDE, another job) a competing process takes a core from that team: every op then
waits for the descheduled thread, and run time multiplies (issue 33: the ``tiny`` preset took
2.65x its idle time with one competing process on 2 cores, 15x under a load average of 4-6).
One thread never waits for another but leaves a core idle on an idle machine (the demo's
training: 1.5x slower than torch's two threads). Measured in ``docs/results/benchmarks.md``.

So the default, ``auto``, follows the machine: torch gets as many threads as there are cores
that no other process is using, measured from ``/proc/stat`` (the CPU time of this process's
cores, less this process's own): once when the policy is applied (a 0.2 s sample), then every
:data:`INTERVAL_S` seconds inside training loops (:class:`ThreadGovernor`, called by the
training engine at each step). A competing process that starts mid-run sends training to one
thread within seconds; when it ends, training gets its cores back. Where ``/proc/stat`` is
missing (macOS, Windows) ``auto`` is one thread.

The policy, in order:

* ``threads`` given to :func:`configure_threads` (the CLI's ``--threads``): a number,
  ``auto`` or ``torch``;
* else the ``TVLENS_THREADS`` environment variable: the same values;
* else ``auto`` (:data:`DEFAULT_POLICY`).

A fixed number of threads also asks OpenMP's idle threads to sleep rather than spin
(``OMP_WAIT_POLICY=PASSIVE``, set on ``import tvlens`` from ``TVLENS_THREADS``; OpenMP reads it
once, when torch loads it): with a fixed count nothing adapts to a competing process, and
sleeping threads lose less to it. ``auto`` keeps OpenMP's default waiting, the fastest on an
idle machine. A user's own ``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` is kept.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tvlens.errors import TVLensError

ENV = "TVLENS_THREADS"
TORCH_DEFAULT = "torch"
AUTO = "auto"
DEFAULT_POLICY = AUTO
INTERVAL_S = 2.0  # how often a training loop re-reads the other processes' load
SAMPLE_S = 0.2  # the first sample, when the policy is applied

_configured: int | None = None
_policy: str | int | None = None  # what configure_threads applied: a number, AUTO or None
_max_threads: int | None = None  # torch's own default (one per core), the most auto uses


def _env_policy() -> str | None:
    value = os.environ.get(ENV, "").strip().lower()
    return value or None


def set_wait_policy() -> None:
    """Ask OpenMP's idle threads to sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``) when
    ``TVLENS_THREADS`` fixes a number of threads, unless the user set a wait policy; effective
    only before torch is imported."""
    env = _env_policy()
    if env in (None, AUTO, TORCH_DEFAULT) or "torch" in sys.modules:
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_threads(value: str | int | None) -> int | str | None:
    """``None`` / ``"torch"`` -> None (torch's default); ``"auto"`` -> ``"auto"``; a positive
    number -> that number."""
    if value is None or str(value).strip().lower() in ("", TORCH_DEFAULT):
        return None
    if str(value).strip().lower() == AUTO:
        return AUTO
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise TVLensError(
            f"threads must be a positive number, 'auto' (follow the machine's load) or 'torch' "
            f"(torch's default), got {value!r}: set --threads or {ENV} to e.g. auto."
        )
    return n


def default_policy() -> int | str | None:
    """The policy tvlens applies when not told: ``TVLENS_THREADS``, else
    :data:`DEFAULT_POLICY`; an explicit ``OMP_NUM_THREADS`` is the user's choice (None)."""
    env = _env_policy()
    if env is not None:
        return parse_threads(env)
    if os.environ.get("OMP_NUM_THREADS"):
        return None  # torch already follows the user's OMP_NUM_THREADS
    return DEFAULT_POLICY


def _cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def read_busy_seconds(cores: list[int]) -> float | None:
    """CPU-seconds spent busy (all but idle and iowait) on ``cores`` since boot, from
    ``/proc/stat``; None where it cannot be read."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    want = {f"cpu{c}" for c in cores}
    ticks = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in want:
            values = [int(v) for v in parts[1:]]
            ticks += sum(values) - values[3] - (values[4] if len(values) > 4 else 0)
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return ticks / hz


# (wall clock s, busy CPU-seconds of the process's cores, this process's CPU-seconds)
Sample = tuple[float, float, float]


def take_sample(
    cores: list[int],
    reader: Callable[[list[int]], float | None] = read_busy_seconds,
    clock: Callable[[], float] = time.monotonic,
) -> Sample | None:
    """Now, the busy CPU-seconds of ``cores`` and this process's CPU-seconds (None without
    ``/proc/stat``)."""
    busy = reader(cores)
    return None if busy is None else (clock(), busy, time.process_time())


def other_cores_between(a: Sample, b: Sample) -> float:
    """The cores other processes kept busy between two samples: the busy CPU time of this
    process's cores less this process's own, per second of wall time."""
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / max(b[0] - a[0], 1e-9))


def threads_for(other_cores: float, n_cores: int, max_threads: int) -> int:
    """The threads to use when other processes keep ``other_cores`` cores busy: the cores
    left, rounded (a core at least half free counts), between 1 and ``max_threads``."""
    free = math.floor(n_cores - other_cores + 0.5)
    return max(1, min(max_threads, free))


class ThreadGovernor:
    """Adapts torch's intra-op threads to the other processes' load (policy ``auto``).

    Call :meth:`step` as often as convenient (every training step): at most every
    ``interval_s`` it compares the busy CPU time of this process's cores with this process's
    own CPU time over the last interval and sets ``torch.set_num_threads`` to the cores left
    (:func:`threads_for`). Inactive (``step`` does nothing) unless the policy is ``auto`` and
    ``/proc/stat`` can be read."""

    def __init__(
        self,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        reader: Callable[[list[int]], float | None] = read_busy_seconds,
    ) -> None:
        self.interval_s, self.clock, self.reader = interval_s, clock, reader
        self.cores = _cores()
        self.other_cores: float | None = None
        self._last: Sample | None = self._sample() if _policy == AUTO else None
        self.active = self._last is not None

    def _sample(self) -> Sample | None:
        return take_sample(self.cores, self.reader, self.clock)

    def step(self, force: bool = False) -> int | None:
        """Re-read the load if the interval has passed; the threads set (None: unchanged)."""
        if not self.active:
            return None
        now = self.clock()
        if not force and self._last is not None and now - self._last[0] < self.interval_s:
            return None
        sample = self._sample()
        if sample is None:  # /proc/stat gone: leave the threads as they are
            return None
        out = None
        if self._last is not None and sample[0] > self._last[0]:
            self.other_cores = other_cores_between(self._last, sample)
            out = self._apply(threads_for(self.other_cores, len(self.cores), _max()))
        self._last = sample
        return out

    @staticmethod
    def _apply(n: int) -> int:
        global _configured
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        _configured = n
        return n


def _max() -> int:
    return _max_threads or len(_cores())


def measure_other_cores(seconds: float = SAMPLE_S) -> float | None:
    """The cores other processes kept busy over the next ``seconds`` (None without
    ``/proc/stat``)."""
    cores = _cores()
    first = take_sample(cores)
    if first is None:
        return None
    time.sleep(seconds)
    second = take_sample(cores)
    return None if second is None else other_cores_between(first, second)


def configure_threads(threads: str | int | None = None, force: bool = False) -> int:
    """Apply the thread policy (see the module docstring) and return torch's thread count.

    ``threads`` (a number, ``"auto"`` or ``"torch"``) wins over the environment; without it
    the policy is applied once per process (``force=True`` applies it again), so that a
    user's own ``torch.set_num_threads`` after the first call is kept."""
    global _configured, _policy, _max_threads
    import torch

    if _max_threads is None:
        _max_threads = torch.get_num_threads()  # torch's default: one per core
    if threads is None and _configured is not None and not force:
        return torch.get_num_threads()
    _policy = parse_threads(threads) if threads is not None else default_policy()
    if _policy == AUTO:
        others = measure_other_cores()
        n = 1 if others is None else threads_for(others, len(_cores()), _max())
        torch.set_num_threads(n)
    elif _policy is not None:
        torch.set_num_threads(_policy)
    _configured = torch.get_num_threads()
    return _configured
