"""The configuration of ``tvlens vectors`` (task and function vectors, their layer sweeps and
report): what :func:`tvlens.injection.run_task_vectors` takes, the CLI fills and the run writes
to ``config.json``. It sits with the extraction methods it names (their registry checks it),
in a package whose names load lazily, so that the CLI reads it without loading torch."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

from tvlens.errors import ConfigError
from tvlens.extraction.methods import FunctionVector, method_name
from tvlens.extraction.registry import (
    DEFAULT_METHOD,
    expand_methods,
    extraction_choices,
    get_extraction_method,
)
from tvlens.runs import VECTORS
from tvlens.runs.config import MAX_BATCH, Config, method_opt, no_type_check, opt


@no_type_check
@dataclass(frozen=True)
class VectorsConfig(Config):
    """Extract task vectors with any registered method (Hendel's task vector, Todd's function
    vector, ICV, I2CL, state vectors, LTV), choose each one's layer or strength on dev
    queries, and report zero-shot / ICL / vector accuracy on held-out queries (``tvlens
    vectors``)."""

    kind: ClassVar[str] = VECTORS
    minimum: ClassVar[dict[str, int]] = {
        "k": 1,
        "n_extract": 1,
        "top_k_heads": 1,
        "max_batch": 1,
    }
    renamed_fields: ClassVar[dict[str, str]] = {"method": "methods"}
    # names (checked against the registry) or method objects (checked by expand_methods)
    methods: tuple[Any, ...] = opt(
        (DEFAULT_METHOD,), "Which vectors: extraction methods, comma-separated, or all.",
        choices=extraction_choices, sep=",", alias="--method", objects=True,
    )  # fmt: skip
    k: int | None = opt(None, "Demonstrations (default: the model's training k).")
    n_extract: int = opt(32, "Prompts to extract each vector from.")
    # The function vector's options: their defaults and help are the method's own.
    top_k_heads: int = method_opt(FunctionVector, "top_k_heads")
    fv_scale: float = method_opt(FunctionVector, "scale")
    split: tuple[float, float, float] = opt(
        (0.5, 0.2, 0.3), "Shares of each task's examples: extraction, layer choice, test.", sep=","
    )
    seed: int = opt(0, "Seed of the prompts and splits.")
    template: Literal["arrow", "qa"] | None = opt(None, "Prompt template (default: the model's).")
    max_batch: int = opt(MAX_BATCH, "Rows per forward pass.")
    answer_token: Literal["only", "first"] = opt(
        "only", "Answers of several tokens: only (refuse them) or first (score their first "
        "token, as Hendel et al. and Todd et al. do)."
    )  # fmt: skip
    # Any method's own options (its dataclass fields), by method name: a new method's options
    # reach `tvlens vectors` with no edit here.
    method_options: dict = opt(
        factory=dict, help='Methods\' own options, as JSON: {"fv": {"top_k_heads": 4}}.'
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", tuple(self.split))
        object.__setattr__(self, "methods", expand_methods(self.methods))
        for name, given in self.method_options.items():
            cls = get_extraction_method(name)
            unknown = sorted(set(given) - set(cls.option_fields()))
            if unknown:
                raise ConfigError(
                    f"method_options: {name} has no option {unknown}; its options are "
                    f"{sorted(cls.option_fields())}."
                )
        if len(self.split) != 3 or min(self.split) <= 0 or sum(self.split) > 1 + 1e-9:
            raise ConfigError(
                f"split must be three positive fractions summing to at most 1 (extraction, "
                f"layer choice, test), got {self.split}."
            )
        super().__post_init__()
        for m in self.methods:
            low = (get_extraction_method(m) if isinstance(m, str) else m).min_k
            if self.k is not None and self.k < low:
                raise ConfigError(
                    f"k (--k) must be >= {low} for {method_name(m)} (the fewest demonstrations "
                    f"it works with: its min_k), got {self.k}: raise k or leave {method_name(m)} "
                    "out of methods."
                )

    def method_objects(self) -> tuple[Any, ...]:
        """The methods as objects: a name becomes its class with the options this config
        sets (e.g. ``top_k_heads``, ``fv_scale``, and ``method_options[name]``); an object is
        used as given."""
        return tuple(
            get_extraction_method(m).from_config(self, **self.method_options.get(m, {}))
            if isinstance(m, str)
            else m
            for m in self.methods
        )

    def method_names(self) -> tuple[str, ...]:
        return tuple(method_name(m) for m in self.methods)

    def _as_dict(self) -> dict[str, Any]:
        # A method object is written by name (its options go into the report's config).
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**d, "methods": list(self.method_names())}
