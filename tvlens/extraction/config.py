"""The configuration of ``tvlens vectors`` (task and function vectors, their layer sweeps and
report): what :func:`tvlens.injection.run_task_vectors` takes, the CLI fills and the run writes
to ``config.json``. It sits with the extraction methods it names (their registry checks it),
in a package whose names load lazily: ``tvlens.injection`` cannot be lazy, because
``tvlens.injection.inject`` is both a module and the function the package exports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from tvlens.errors import ConfigError
from tvlens.extraction.registry import (
    DEFAULT_METHOD,
    expand_methods,
    extraction_choices,
    get_extraction_method,
)
from tvlens.runs import VECTORS
from tvlens.runs.config import Config, no_type_check, opt


@no_type_check
@dataclass(frozen=True)
class VectorsConfig(Config):
    """Extract task vectors (Hendel) or function vectors (Todd), sweep layers, and report
    zero-shot / ICL / vector accuracy on held-out queries (``tvlens vectors``)."""

    kind: ClassVar[str] = VECTORS
    minimum: ClassVar[dict[str, int]] = {
        "k": 1,
        "n_extract": 1,
        "top_k_heads": 1,
        "max_batch": 1,
    }
    renamed_fields: ClassVar[dict[str, str]] = {"method": "methods"}
    methods: tuple[str, ...] = opt(
        (DEFAULT_METHOD,), "Which vectors: extraction methods, comma-separated, or all.",
        choices=extraction_choices, sep=",", alias="--method",
    )  # fmt: skip
    k: int | None = opt(None, "Demonstrations (default: the model's training k).")
    n_extract: int = opt(32, "Prompts to extract each vector from.")
    top_k_heads: int = opt(10, "Heads in a function vector.")
    fv_scale: float = opt(1.0, "Scale of the added function vector.")
    split: tuple[float, float, float] = opt(
        (0.5, 0.2, 0.3), "Shares of each task's examples: extraction, layer choice, test.", sep=","
    )
    seed: int = opt(0, "Seed of the prompts and splits.")
    template: Literal["arrow", "qa"] | None = opt(None, "Prompt template (default: the model's).")
    max_batch: int = opt(1024, "Rows per forward pass.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", tuple(self.split))
        object.__setattr__(self, "methods", expand_methods(self.methods))
        if len(self.split) != 3 or min(self.split) <= 0 or sum(self.split) > 1 + 1e-9:
            raise ConfigError(
                f"split must be three positive fractions summing to at most 1 (extraction, "
                f"layer choice, test), got {self.split}."
            )
        super().__post_init__()
        for m in self.methods:
            low = get_extraction_method(m).min_k
            if self.k is not None and self.k < low:
                raise ConfigError(
                    f"k (--k) must be >= {low} for {m} (a function vector's corrupted prompts "
                    f"shuffle the demonstrations' labels), got {self.k}."
                )
