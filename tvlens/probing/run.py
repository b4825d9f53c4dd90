"""What ``tvlens emergence`` runs: the emergence analysis and the perturbation test, then their
JSON and figures in an output folder. (``tvlens probe`` runs
:func:`tvlens.probing.runner.run_probe`.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvlens.errors import ConfigError, LayerError
from tvlens.plotting import (
    plot_emergence,
    plot_perturbation,
    save_figure,
)
from tvlens.probing.config import EmergenceConfig
from tvlens.probing.emergence import EmergenceResult, emergence
from tvlens.probing.family import family_for_run
from tvlens.probing.perturbation import perturbation
from tvlens.results import Result
from tvlens.runs import (
    CONFIG_FILE,
    EMERGENCE_FILE,
    PERTURBATION_FILE,
    prepare_out_dir,
    tidy_on_error,
)
from tvlens.runs.checkpoints import write_json_atomically


@dataclass
class EmergenceRun(Result, Mapping):
    """:func:`run_emergence`'s result: the emergence series, the perturbation tests (none when
    skipped) and the figures written; it reads as the mapping it once was
    (``res["emergence"]``, ``res.get("perturbation", [])``)."""

    emergence: EmergenceResult
    figures: dict[str, Any] = field(default_factory=dict)
    perturbation: list[Any] = field(default_factory=list)

    def _keys(self) -> list[str]:
        return ["emergence", "figures"] + (["perturbation"] if self.perturbation else [])

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def to_dict(self) -> dict[str, Any]:
        return {"emergence": self.emergence.to_dict(),
                "perturbation": [p.to_dict() for p in self.perturbation]}  # fmt: skip

    def __str__(self) -> str:
        em = self.emergence
        lines = [f"step {s:>7d}  TD by layer " + " ".join(f"{x:.2f}" for x in row)
                 for s, row in zip(em.steps, em.td, strict=True)]  # fmt: skip
        lines += [f"{t:12s} TD>=0.5 at step {o['td_step']}, loss halved at step {o['loss_step']}"
                  for t, o in em.onsets().items()]  # fmt: skip
        lines += [f"perturbation step {p.step} layer {p.layer}: {p.summary()}"
                  for p in self.perturbation]  # fmt: skip
        return "\n".join(lines)

    def to_dataframe(self):
        """The emergence table (step, layer, TD, loss)."""
        return self.emergence.to_dataframe()

    def plot(self, **kwargs: Any):
        return self.emergence.plot(**kwargs)


@tidy_on_error
def run_emergence(
    run: str | Path,
    out: str | Path,
    config: EmergenceConfig | None = None,
    progress: bool = True,
    **options: Any,
) -> EmergenceRun:
    """What ``tvlens emergence`` runs, as ``config`` says (an
    :class:`~tvlens.probing.config.EmergenceConfig`, or its fields as keyword ``options``):
    :func:`emergence` on a run, then (unless ``perturb_layer`` is negative) the perturbation
    test at an early and the last checkpoint (default layer: the middle one; ``perturb_steps``
    to choose the checkpoints). Writes ``out/emergence.json``, ``out/perturbation.json``,
    ``out/config.json`` and the figures ``emergence`` and ``perturbation`` (HTML + PNG)."""
    if config is not None and options:
        raise ConfigError(f"Pass config= or its fields {sorted(options)}, not both.")
    cfg = config or EmergenceConfig(**options)
    revisions, n_prompts, seed = cfg.revisions, cfg.n_prompts, cfg.seed
    perturb_layer, perturb_mode = cfg.perturb_layer, cfg.perturb_mode
    perturb_prompts, perturb_steps = cfg.perturb_prompts, cfg.perturb_steps
    family = family_for_run(run)
    # Checked before anything is computed or written.
    n_layers = int(json.loads((Path(run) / CONFIG_FILE).read_text())["config"]["n_layers"])
    if perturb_layer is not None and perturb_layer >= n_layers:
        raise LayerError(
            f"perturb_layer={perturb_layer} is out of range for {str(run)!r} with {n_layers} "
            f"layers: use 0..{n_layers - 1} (or -1 to skip the perturbation test)."
        )
    out = prepare_out_dir(out, cfg.kind)
    t0 = time.time()
    em = emergence(
        run, family, revisions=revisions, n_prompts=n_prompts, seed=seed, progress=progress
    )
    em_d = em.to_dict()
    em.save(out / EMERGENCE_FILE)  # EmergenceResult.load(out / "emergence.json") reads it back
    figs = {"emergence": save_figure(plot_emergence(em_d), out / "emergence")}
    result: dict[str, Any] = {"emergence": em, "figures": figs}
    if perturb_layer is None or perturb_layer >= 0:
        n_layers = len(em.layers)
        layer = n_layers // 2 if perturb_layer is None else perturb_layer
        # "early": the first checkpoint whose overall TD at that layer is halfway to its final
        # value (clusters partly formed); "late": the last checkpoint.
        tds = [row[layer] for row in em.td]
        half = tds[0] + 0.5 * (tds[-1] - tds[0])
        early = next(s for s, v in zip(em.steps, tds, strict=True) if v >= half)
        perts = []
        for step in perturb_steps or dict.fromkeys([early, em.steps[-1]]):
            model = family.load(run, revision=step)
            perts.append(
                perturbation(
                    model, family, layer, n_prompts=perturb_prompts, seed=seed, mode=perturb_mode
                )
            )
        pd = [p.to_dict() for p in perts]
        write_json_atomically(out / PERTURBATION_FILE, pd)
        figs["perturbation"] = save_figure(plot_perturbation(pd), out / "perturbation")
        result["perturbation"] = perts
    write_json_atomically(
        out / CONFIG_FILE,
        {
            **cfg.to_dict(),
            "run": str(run),
            "family": family.describe(),
            "seconds": round(time.time() - t0, 1),
        },
    )
    return EmergenceRun(**result)
