"""The compare's processes: cells claimed through exclusively created files, so that
``workers`` processes (or commands started by hand on the same folder) share the work."""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tvlens.compare.setup import (
    Cell,
    CompareConfig,
    CompareContext,
    cell_path,
    cell_state,
    compare_cells,
    compare_context,
    retire_stale,
    selection,
)
from tvlens.errors import TVLensError
from tvlens.models.loading import load_model
from tvlens.runs.checkpoints import write_json_atomically

CLAIM = ".claim"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def resolve_workers(workers: int | str, device: str, loaded: bool = False) -> int:
    """The number of compare processes: an int as given; ``"auto"``: one per core (at most
    4) on a CPU, where a second torch thread sped SmolLM2-135M up 1.4-1.5x and a second
    single-thread process 1.8x (2 cores); one on an accelerator or for a model passed
    already loaded (a process cannot share it)."""
    if workers == "auto":
        if loaded or not str(device).startswith("cpu"):
            return 1
        return max(1, min(4, available_cores()))
    try:
        n = int(workers)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise TVLensError(f"workers must be a positive integer or 'auto', got {workers!r}.")
    if n > 1 and loaded:
        raise TVLensError(
            "workers > 1 needs the target by name or folder (each process loads its own "
            "copy); a loaded model runs in this process only: pass workers=1."
        )
    return n


def claim_cell(path: Path) -> bool:
    """Claim a cell for this process: an exclusively created ``.claim`` file holding the
    host and pid. A claim whose process is gone on this host (a killed compare) is taken."""
    claim = path.with_suffix(CLAIM)
    claim.parent.mkdir(parents=True, exist_ok=True)
    me = f"{platform.node()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _claim_alive(claim):
                return False
            claim.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return True
    return False


def _claim_alive(claim: Path) -> bool:
    try:
        host, pid = claim.read_text().split()
    except (OSError, ValueError):
        return False  # unreadable or half-written by a killed process
    if host != platform.node():
        return True  # another machine's process: nothing here can tell whether it lives
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_parent(
    parent: int,
    getppid: Callable[[], int] = os.getppid,
    stop: Callable[[int], None] = os._exit,
    sleep: Callable[[float], None] = time.sleep,
    every: float = 2.0,
) -> None:
    """Stop this process once ``parent`` is no longer its parent. A killed compare (SIGTERM,
    SIGKILL) runs no clean-up, so its daemon workers would otherwise go on computing cells
    of a run nobody waits for (and write them into a folder that may since be another)."""
    while getppid() == parent:
        sleep(every)
    stop(1)


def _worker(target: str, revision: str | None, out: str, cfg: CompareConfig, device: str,
            threads: int, index: int, compute: Callable, parent: int) -> None:  # fmt: skip
    """One extra compare process: its own target, the same cells, claimed one at a time."""
    threading.Thread(target=watch_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    model = load_model(target, revision=revision, device=device)
    ctx = compare_context(cfg, model, Path(out), progress=False)
    run_cells(ctx, compare_cells(cfg), compute, tag=f"compare w{index}", announce=True)


def run_parallel(
    ctx: CompareContext,
    cells: Sequence[Cell],
    pending: Sequence[Cell],
    n: int,
    threads: int,
    compute: Callable[[CompareContext, Cell], dict[str, Any]],
) -> list[Cell]:
    """This process and ``n - 1`` spawned ones compute the cells; each claims the next free
    one. Numbers equal the one-process run up to float summation order (thread counts)."""
    import multiprocessing as mp

    spawn = mp.get_context("spawn")
    procs = [
        spawn.Process(target=_worker, args=(ctx.cfg.target, ctx.cfg.target_revision,
                      str(ctx.out), ctx.cfg, ctx.device, threads, i, compute, os.getpid()),
                      daemon=True)
        for i in range(1, n)
    ]  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for p in procs:
            p.start()
        run_cells(ctx, cells, compute, tag="compare w0")
        for p in procs:
            p.join()
    finally:
        torch.set_num_threads(before)
        for p in procs:  # an exception here (Ctrl-C) stops the workers too
            if p.is_alive():
                p.terminate()
                p.join()
    failed = [i for i, p in enumerate(procs, 1) if p.exitcode != 0]
    missing = [c for c in cells if cell_state(ctx.cfg, ctx.out, c) != "done"]
    if failed and missing:
        raise TVLensError(
            f"Compare worker(s) {failed} failed (traceback above); cells not computed: "
            f"{[str(c) for c in missing]}. Rerun the same command to resume."
        )
    return [c for c in pending if cell_state(ctx.cfg, ctx.out, c) == "done"]


def _ready(ctx: CompareContext, cell: Cell) -> bool:
    return cell.is_sweep or selection(ctx.cfg, ctx.out, cell.method) is not None


def run_cells(
    ctx: CompareContext,
    cells: Sequence[Cell],
    compute: Callable[[CompareContext, Cell], dict[str, Any]],
    stop_after: int | None = None,
    tag: str = "compare",
    announce: bool | None = None,
    poll: float = 5.0,
) -> list[Cell]:
    """Compute (``compute(ctx, cell)``, e.g. :func:`tvlens.compare.run.run_cell`) the cells
    not yet on disk that no other live process has claimed, sweeps first; a reported cell
    waits until its method's sweep cells are done (by any process)."""
    announce = ctx.progress if announce is None else announce
    ran: list[Cell] = []
    while True:
        if ctx.cfg.sweep_widen:  # a widened grid adds sweep cells as they finish
            cells = compare_cells(ctx.cfg, ctx.out)
        todo = [c for c in cells if cell_state(ctx.cfg, ctx.out, c) != "done"]
        if not todo or (stop_after is not None and len(ran) >= stop_after):
            return ran
        ready = [c for c in todo if _ready(ctx, c)]
        cell = next((c for c in ready if claim_cell(cell_path(ctx.out, c))), None)
        if cell is None:
            if len(ready) == len(todo):  # all claimed by other live processes: theirs
                return ran
            time.sleep(poll)  # some wait for sweep cells that other processes compute
            continue
        path = cell_path(ctx.out, cell)
        try:
            state = cell_state(ctx.cfg, ctx.out, cell)
            if state == "done":  # finished by another process since the check above
                continue
            if state == "stale":  # the sweep's choice changed: computed again
                retire_stale(ctx.out, cell)
            if announce:
                print(f"[{tag}] {cell}", flush=True)
            res = compute(ctx, cell)
            res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            res["torch_threads"] = torch.get_num_threads()
            res["device"] = device_name(ctx.device)  # this process's, as it computed the cell
            write_json_atomically(path, res)
            ran.append(cell)
        finally:
            path.with_suffix(".claim").unlink(missing_ok=True)


def device_name(device: str, threads: int | None = None, processes: int = 1) -> str:
    """The device in words; on a CPU its model, cores, and the processes and threads that
    ran (default: this process's torch threads)."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(0)})"
    cpu = platform.processor() or platform.machine()
    try:  # the CPU's model name where the OS says it (Linux)
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = threads or torch.get_num_threads()
    procs = f"{processes} processes x " if processes > 1 else ""
    return f"{device} ({cpu}, {os.cpu_count()} cores, {procs}{threads} threads)"
