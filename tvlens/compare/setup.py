"""What a comparison is run on: its configuration and presets, its tasks and their splits, and
the context every (method, seed) cell reads (:mod:`tvlens.compare.run` runs the cells)."""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvlens.compare.config import (  # noqa: F401  (part of the compare's public names)
    CPU_IN_DOMAIN,
    CPU_UNSEEN,
    PRESETS,
    CompareConfig,
    get_compare_preset,
)
from tvlens.compare.context import CompareContext
from tvlens.compare.data import (  # noqa: F401  (part of the compare's public names)
    FV_ALIAS,
    CompareData,
    input_overlap,
    load_compare_data,
    merged,
    resolve_task,
)
from tvlens.compare.registry import get_method_spec, variant_label
from tvlens.models.loading import TVModel
from tvlens.runs import CELLS_DIR
from tvlens.runs.portable import local

# ---------------------------------------------------------------------------- cells


SELECTED = "selected"  # a reported cell: the method's dev-selected variant


@dataclass(frozen=True)
class Cell:
    """One unit of work, one JSON file: a sweep cell (``variant`` = its label, seed 0: trained
    and scored on dev only) or a reported cell (``variant`` = ``"selected"``: the variant with
    the best dev accuracy among the method's sweep cells, trained with ``seed`` and scored on
    the test queries)."""

    method: str
    variant: str
    seed: int

    @property
    def is_sweep(self) -> bool:
        return self.variant != SELECTED

    def __str__(self) -> str:
        return f"{self.method} [{self.variant}] seed {self.seed}"


def cell_path(out: Path, cell: Cell) -> Path:
    return out / CELLS_DIR / f"{run_name(cell)}.json"


def run_name(cell: Cell) -> str:
    """The cell's file name part, also its training run folder's (``DIR/runs/<name>``); the
    ``:`` of ``vector:<name>`` is written ``-`` (a file name on every system)."""
    return f"{cell.method.replace(':', '-')}__{cell.variant}__seed{cell.seed}"


def method_seeds(cfg: CompareConfig, method: str) -> list[int]:
    spec = get_method_spec(method)
    if spec.seedless:
        return [0]
    n = cfg.demo_seeds if spec.demonstrations and cfg.demo_seeds is not None else cfg.seeds
    return list(range(min(n, spec.max_seeds or n)))


def sweep_variants(cfg: CompareConfig, method: str, out: Path | None = None) -> list[dict]:
    """The variants a method's sweep tries on seed 0 (one: no sweep cells); with
    ``cfg.sweep_widen`` and the comparison's folder ``out``, the grid widened until the best
    learning rate is interior; with ``cfg.sweep_joint``, every pair of the values tried
    (:func:`widened`)."""
    vs = get_method_spec(method).variants(cfg)
    steps = cfg.sweep_widen if out is not None else 0  # widening reads the folder's cells
    if len(vs) < 2 or not (steps or cfg.sweep_joint):
        return vs

    def dev(v: dict) -> float | None:  # only called when steps > 0, i.e. with a folder
        return _best_dev(out, Cell(method, variant_label(v), 0)) if out else None

    return widened(vs, steps, dev, joint=cfg.sweep_joint)


def _best_dev(out: Path, cell: Cell) -> float | None:
    path = cell_path(out, cell)
    if not path.is_file():
        return None
    return read_cell(path).get("info", {}).get("best_dev_acc", -1.0)


def read_cell(path: Path) -> dict[str, Any]:
    """A finished cell's JSON, parsed once per version of the file: the planner asks for
    the sweep cells' dev accuracies on every poll (:func:`widened`, :func:`selection`). The
    dict is shared between callers: read it, or copy it (``local``) before changing it."""
    st = path.stat()
    return _read_cell(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=256)
def _read_cell(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def widened(
    variants: list[dict], steps: int, dev: Callable[[dict], float | None],
    keys: tuple[str, ...] = ("lr", "scale"), joint: bool = False,
) -> list[dict]:  # fmt: skip
    """``variants`` with up to ``steps`` more: while the best variant (by ``dev``; None: not
    done yet, so the grid waits) has a setting among ``keys`` (the learning rate, then ATV's
    λ) that is the smallest or largest tried with its other settings, one more value a grid
    step beyond it (the ratio of the two values at that edge) is added. A sweep whose best
    value sits on the edge of its grid may not have found its optimum; the report says where
    each chosen value lies (``grid_position``). ``joint``: before each look at the best, the
    grid is completed to every combination of the values tried (:func:`grid_gaps`), so a
    cross becomes a full grid and a widened value is tried with every λ."""
    vs = list(variants)
    for step in range(steps + 1):
        if joint:
            vs += grid_gaps(vs)
        if step == steps:
            return vs
        scores = [dev(v) for v in vs]
        if any(x is None for x in scores):
            return vs
        best = vs[max(range(len(vs)), key=lambda i: (scores[i], -i))]
        extra = next((x for k in keys if k in best and (x := _beyond(vs, best, k))), None)
        if extra is None:
            return vs
        vs.append(extra)
    return vs


def grid_gaps(variants: list[dict]) -> list[dict]:
    """The combinations of the values the variants try (per setting) that none of them is,
    in grid order: what completes a cross-shaped sweep to a full grid."""
    keys = list(variants[0])
    values = {k: sorted({v[k] for v in variants}) for k in keys}
    seen = {tuple(v[k] for k in keys) for v in variants}
    combos = itertools.product(*(values[k] for k in keys))
    return [dict(zip(keys, c, strict=True)) for c in combos if c not in seen]


def _beyond(vs: list[dict], best: dict, key: str) -> dict | None:
    """The variant one grid step past ``best`` along ``key`` when ``best`` is on the edge of
    its line (the variants equal to it but in ``key``); when ``best`` is alone on its line
    (a cross-shaped sweep: ATV's λ values tried at one learning rate), the nearest value of
    ``key`` tried elsewhere, above it first; else None."""
    others = {k: x for k, x in best.items() if k != key}
    line = sorted(v[key] for v in vs if {k: x for k, x in v.items() if k != key} == others)
    if len(line) < 2:
        tried = sorted({v[key] for v in vs if key in v})
        near = [x for x in tried if x > best[key]][:1] + [x for x in tried if x < best[key]][-1:]
        return {**best, key: near[0]} if near else None
    if line[0] < best[key] < line[-1]:
        return None
    edge, inner = (line[-1], line[-2]) if best[key] == line[-1] else (line[0], line[1])
    return {**best, key: float(f"{edge * edge / inner:.3g}")}


def compare_cells(cfg: CompareConfig, out: Path | None = None) -> list[Cell]:
    """Every cell, in the order they are computed: the sweeps first (the reported cells of a
    swept method wait for them), then the reported cells seed by seed (a compare stopped
    early has every method's first seeds). With ``cfg.sweep_widen``, the sweep cells depend
    on those done in ``out`` (the grid widens while its best value is on an edge)."""
    sweeps = [
        Cell(m, variant_label(v), 0)
        for m in cfg.methods
        if len(vs := sweep_variants(cfg, m, out)) > 1
        for v in vs
    ]
    reported = [Cell(m, SELECTED, s) for m in cfg.methods for s in method_seeds(cfg, m)]
    return sweeps + sorted(reported, key=lambda c: c.seed)  # stable: the methods' order


def selection(cfg: CompareConfig, out: Path, method: str) -> dict[str, Any] | None:
    """The variant a method's reported cells use, or None while a sweep cell it needs is not
    done: ``{"variant", "label", "source"}`` (``source``: the chosen sweep cell's JSON, whose
    best-dev weights seed 0 reuses; ``"dev"``: every variant's best dev accuracy). A method
    that ``inherits`` takes the other method's choice (its default variant when that method
    is not part of the comparison)."""
    spec = get_method_spec(method)
    base = spec.inherits or method
    vs = sweep_variants(cfg, base, out)  # widened by the cells done (cfg.sweep_widen)
    if len(vs) == 1 or base not in cfg.methods:
        v = vs[0] if len(vs) == 1 else get_method_spec(base).sweep(cfg)[cfg.sweep_default_index]
        return {"variant": v, "label": variant_label(v), "source": None, "dev": {}}
    cells = []
    for v in vs:
        path = cell_path(out, Cell(base, variant_label(v), 0))
        if not path.is_file():
            return None
        cells.append((v, read_cell(path)))
    dev = {variant_label(v): c.get("info", {}).get("best_dev_acc", -1.0) for v, c in cells}
    best = max(range(len(cells)), key=lambda i: (dev[variant_label(cells[i][0])], -i))
    v, c = cells[best]
    return {
        "variant": v,
        "label": variant_label(v),
        "dev": dev,
        "source": local(c) if base == method else None,
    }  # written portable; a copy


def cell_state(cfg: CompareConfig, out: Path, cell: Cell) -> str:
    """``"missing"`` (no file), ``"done"``, or ``"stale"``: a reported cell of a swept method
    whose variant is not the one the sweep now chooses (the grid widened after it was
    computed, and a new value won on dev). A stale cell is computed again
    (:func:`retire_stale`) and left out of the report meanwhile; while the sweep is not
    finished a reported cell counts as done (it is judged once the choice is known)."""
    path = cell_path(out, cell)
    if not path.is_file():
        return "missing"
    if cell.is_sweep:
        return "done"
    sel = selection(cfg, out, cell.method)
    if sel is None or not sel["dev"]:  # sweep not finished, or not a swept method
        return "done"
    values = read_cell(path).get("variant_values")  # a variant is its label (its file name)
    return "stale" if values is not None and variant_label(values) != sel["label"] else "done"


def retire_stale(out: Path, cell: Cell) -> None:
    """Move a stale cell's JSON and its training folder under ``stale/`` (``cells/stale/``,
    ``runs/stale/``, named with the time), so that it is computed again and nothing is lost."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for src in (cell_path(out, cell), out / "runs" / run_name(cell)):
        if src.exists():
            dest = src.parent / "stale" / f"{src.stem}__{stamp}{src.suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dest)


def compare_context(
    cfg: CompareConfig, target: TVModel, out: Path, progress: bool = True
) -> CompareContext:
    """What every cell reads, for a loaded ``target``: its template and the data split."""
    # Instructed prompts read "instruction / Q: x / A:" (Kang et al. 2025's layout).
    template = target.template(cfg.template or ("qa" if cfg.instructions is not None else None))
    template = template if isinstance(template, str) else template.name
    data = load_compare_data(cfg, template)
    return CompareContext(cfg, target, data, out, str(target.device), template, progress)
