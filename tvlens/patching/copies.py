"""The patched copies of an exact patching sweep: which copy writes which source activation
where, from which block and position it resumes, how copies share a forward pass, and the hook
that writes each copy's source into it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import einops
from jaxtyping import Float
from torch import Tensor

from tvlens.models.tvmodel import TVModel
from tvlens.patching.inputs import component_hook


@dataclass(frozen=True)
class Job:
    """One patched copy: resume at block ``at`` from position ``start``; write the source at
    ``hook`` (of block ``layer``) into positions ``pos`` (None: all from ``start`` on) of head
    ``head``."""

    out: tuple[int, ...]
    layer: int
    start: int
    hook: str
    pos: int | None = None
    head: int | None = None
    at: int = 0


def plan_jobs(
    model: TVModel,
    component: str,
    positions: str,
    layers: list[int],
    n_pos: int,
    n_heads: dict[int, int],
    head_act: str,
    cut_ok: Callable[[int], bool],
    skip_ok: bool,
) -> list[Job]:
    """The patched copies; a copy resumes at its own layer only when earlier blocks may be
    skipped (``skip_ok``), and from its own position only when the corrupted run's cache can
    be cut there exactly (``cut_ok``); otherwise from block 0 / position 0."""
    jobs = []
    last = n_pos - 1
    for li, layer in enumerate(layers):
        hook = component_hook(model, component, layer, head_act)
        heads = range(n_heads[layer]) if component == "heads" else [None]
        at = layer if skip_ok else 0
        for h in heads:
            hi = () if h is None else (h,)
            if positions == "all":
                jobs.append(Job((li, *hi), layer, 0, hook, None, h, at))
            elif positions == "last":
                start = last if cut_ok(last) else 0
                jobs.append(Job((li, *hi), layer, start, hook, last, h, at))
            else:
                for p in range(n_pos):
                    start = p if p == 0 or cut_ok(p) else 0
                    jobs.append(Job((li, p, *hi), layer, start, hook, p, h, at))
    return jobs


def group_jobs(jobs: list[Job], per_pass: int, merge_layers: bool) -> Iterator[list[Job]]:
    """Jobs that resume at the same position (and layer, unless ``merge_layers``), at most
    ``per_pass`` at a time. A merged group resumes at its lowest layer: a copy's blocks below
    its own patch recompute the corrupted values, a waste that is cheaper than one more pass
    when only one token is recomputed (default model, 16 heads at the last position: one pass
    of 16 copies ran in about half the time of four per-layer passes)."""
    by_key: dict[tuple[int, ...], list[Job]] = {}
    for j in jobs:
        by_key.setdefault((j.start,) if merge_layers else (j.layer, j.at, j.start), []).append(j)
    for group in by_key.values():
        for i in range(0, len(group), per_pass):
            yield group[i : i + per_pass]


def writer(
    group: list[Job], hook: str, src: Tensor, start: int, n_pos: int, copies: int, layout: str
):
    """Hook writing each copy's source activation into that copy (copies along the batch,
    ``layout="(b c) t"``, or along the positions, ``"b (c t)"``)."""
    mine = [(c, j) for c, j in enumerate(group) if j.hook == hook]
    s = at_positions(src, start, n_pos)

    def fn(act: Tensor, hook: Any) -> Tensor:
        act = einops.rearrange(act, f"{layout} ... -> b c t ...", c=copies).clone()
        for c, j in mine:
            t = slice(None) if j.pos is None else slice(j.pos - start, j.pos - start + 1)
            src_t = s if s.shape[1] == 1 else s[:, t]
            if j.head is None:
                act[:, c, t] = src_t
            else:
                act[:, c, t, j.head] = src_t[:, :, j.head]
        return einops.rearrange(act, f"b c t ... -> {layout} ...")

    return fn


def at_positions(
    s: Float[Tensor, "batch src_pos *rest"], start: int, n_pos: int
) -> Float[Tensor, "batch new_pos *rest"]:
    """A source activation from position ``start`` on (length-1 position axes broadcast)."""
    return s[:, start:] if s.shape[1] == n_pos else s
