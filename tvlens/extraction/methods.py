"""Extraction methods as objects that own their options.

An extraction method is a small frozen dataclass: its options are its fields (each with a
default and its help, :func:`option`); what it is called in tables, figures and sentences is
class-level (``name``, ``label``, ``column``, ``title``, ``description``, ``min_k``); it
extracts from a task's training examples (:meth:`ExtractionMethod.extract`), says which
hyper-parameters it tunes on dev queries (:meth:`~ExtractionMethod.dev_grid`: the layer, a
strength...) and what it writes where for one choice of them
(:meth:`~ExtractionMethod.intervention`: an :class:`tvlens.extraction.writes.Intervention`,
applied by :func:`tvlens.injection.intervention.apply_intervention`).
The task-vector report (:func:`tvlens.injection.evaluate.evaluate_task_vectors`) applies every
method the same way from these three.

This module imports no torch: the CLI and the configs read names, options and labels from the
classes at start-up (``tvlens --help`` stays fast), so each method imports its heavy code
inside :meth:`~ExtractionMethod.extract` and :meth:`~ExtractionMethod.intervention`.

A method of your own (see "A new extraction method" in ``ARCHITECTURE.md``)::

    @dataclass(frozen=True)
    class Median(ExtractionMethod):
        name: ClassVar[str] = "median"
        label: ClassVar[str] = "median residual (replace)"
        column: ClassVar[str] = "median (layer)"
        ...

is passed as an object anywhere a method name is taken (``methods=[Median()]``), or
registered by name (:func:`tvlens.extraction.registry.register_extraction_method`, or the
``tvlens.extraction_methods`` entry-point group of a package).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from tvlens.errors import ConfigError


def option(default: Any, help: str, **meta: Any) -> Any:
    """A method's option: a dataclass field with its default and its help."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class Extracted:
    """What a method extracted from one task: its vectors (a
    :class:`~tvlens.extraction.vectors.TaskVector`) and anything else it reports (e.g. the
    function vector's head table under ``"heads"``)."""

    vector: Any
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtractionMethod:
    """One extraction method and its options (its dataclass fields).

    Class attributes: ``name`` (``methods=``, ``--methods``, the report's keys), ``label``
    (figure legends), ``column`` (table headers; the chosen layer follows in parentheses),
    ``title`` (sentences; default: the name), ``description`` (one line, citing the paper),
    ``min_k`` (the fewest demonstrations it works with), ``config_fields`` (a run config's
    field -> the option it sets, e.g. ``VectorsConfig.fv_scale`` -> ``scale``).

    A subclass implements :meth:`extract` and :meth:`intervention`, and :meth:`dev_grid` when
    it tunes more than the layer.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    column: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    min_k: ClassVar[int] = 1
    config_fields: ClassVar[dict[str, str]] = {}

    def extract(
        self,
        model: Any,
        task: Any,
        *,
        k: int,
        n_extract: int,
        seed: int,
        template: Any,
        max_batch: int,
        progress: bool,
    ) -> Extracted:
        """Extract from ``task`` (the training examples: demonstrations and dummy queries),
        with ``k``-shot prompts, ``n_extract`` of them."""
        raise NotImplementedError(f"{type(self).__name__} does not implement extract().")

    def dev_grid(self, model: Any, extracted: Extracted) -> list[dict[str, Any]]:
        """The hyper-parameter choices tried on dev queries (the best is scored on test);
        default: every layer."""
        return [{"layer": layer} for layer in range(model.n_layers)]

    def intervention(self, model: Any, extracted: Extracted, **choice: Any) -> Any:
        """What is written where for one choice of :meth:`dev_grid` (an
        :class:`~tvlens.extraction.writes.Intervention`)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement intervention().")

    def how_written(self) -> str:
        """For sentences: "The {title} ... {how_written} the residual at the last token"."""
        return "is written into"

    # ------------------------------------------------------------------ options

    def options(self) -> dict[str, Any]:
        """The options as set (JSON types; written into the report's config)."""
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.loads(json.dumps(raw, default=repr))

    @classmethod
    def option_fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in fields(cls)}

    @classmethod
    def option_default(cls, name: str) -> Any:
        f = cls.option_fields()[name]
        return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]

    @classmethod
    def option_help(cls, name: str) -> str:
        return cls.option_fields()[name].metadata.get("help", "")

    @classmethod
    def from_config(cls, config: Any, **options: Any) -> ExtractionMethod:
        """The method with the options a run's config sets (``config_fields``), and
        ``options`` (given by name: they win)."""
        kw = {o: getattr(config, f) for f, o in cls.config_fields.items() if hasattr(config, f)}
        return cls(**{**kw, **options})


def method_name(method: Any) -> str:
    """A method's name: a name as given, or an object's (or class's) ``name``."""
    return method if isinstance(method, str) else method.name


# ---------------------------------------------------------------------- one residual write


@dataclass(frozen=True)
class ResidualWrite(ExtractionMethod):
    """A method that writes one vector at one layer's residual output at the query, the
    layer chosen on dev queries: ``mode`` ``replace`` (Hendel) or ``add`` (times
    :attr:`strength`). ``one_vector``: the same vector at every layer (a function vector),
    else the vector read at that layer.

    The report scores every layer of such a method from one prefix run
    (:func:`tvlens.injection.sweep.layer_sweep_correct`), the same numbers as applying its
    :meth:`intervention` layer by layer, faster."""

    mode: ClassVar[str] = "replace"
    one_vector: ClassVar[bool] = False

    @property
    def strength(self) -> float:
        return 1.0

    def layer_vectors(self, model: Any, extracted: Extracted) -> Any:
        """``[n_layers, d_model]``: the vector written at each layer."""
        tv = extracted.vector
        return tv.vectors.expand(model.n_layers, -1) if self.one_vector else tv.vectors

    def intervention(self, model: Any, extracted: Extracted, **choice: Any) -> Any:
        # imported here: writes.py loads torch (this module is read by the CLI at start-up)
        from tvlens.extraction.writes import Intervention, Write

        layer = int(choice["layer"])
        vec = self.layer_vectors(model, extracted)[layer]
        op, scale = self.mode, self.strength
        return Intervention((Write(layer, vec, "resid_post", op, scale),), method=self.name)

    def how_written(self) -> str:
        return "replaces" if self.mode == "replace" else "is added to"


@dataclass(frozen=True)
class HendelTaskVector(ResidualWrite):
    """Hendel et al. 2023 ("In-Context Learning Creates Task Vectors"): the mean residual
    after each layer at the last token of ``k``-shot prompts with dummy queries, written over
    (replace) the zero-shot query's residual at one layer."""

    name: ClassVar[str] = "hendel"
    label: ClassVar[str] = "task vector (Hendel, replace)"
    column: ClassVar[str] = "task vector (layer)"
    title: ClassVar[str] = "task vector"
    description: ClassVar[str] = (
        "Hendel et al. 2023: the mean residual at the query of k-shot prompts"
    )

    def extract(self, model, task, *, k, n_extract, seed, template, max_batch, progress):
        # imported here: residual.py loads torch (this module is read by the CLI at start-up)
        from tvlens.extraction.residual import hendel_task_vector

        return Extracted(hendel_task_vector(model, task, k, n_extract, seed=seed,
                                            template=template))  # fmt: skip


@dataclass(frozen=True)
class FunctionVector(ResidualWrite):
    """Todd et al. 2024 ("Function Vectors in Large Language Models"): the sum of the mean
    outputs of the ``top_k_heads`` heads with the largest average indirect effect (read on
    prompts with shuffled labels), added (times ``scale``) at one layer. The AIE reads the
    answer's first token, as the report scores first tokens."""

    name: ClassVar[str] = "fv"
    label: ClassVar[str] = "function vector (add)"
    column: ClassVar[str] = "function vector (layer)"
    title: ClassVar[str] = "function vector"
    description: ClassVar[str] = "Todd et al. 2024: the sum of the top heads' mean outputs"
    # k >= 2: the corrupted prompts shuffle the demonstrations' labels.
    min_k: ClassVar[int] = 2
    config_fields: ClassVar[dict[str, str]] = {"top_k_heads": "top_k_heads", "fv_scale": "scale"}
    mode: ClassVar[str] = "add"
    one_vector: ClassVar[bool] = True

    top_k_heads: int = option(10, "Heads in a function vector.")
    scale: float = option(1.0, "Scale of the added function vector.")

    def __post_init__(self) -> None:
        if self.top_k_heads < 1:
            raise ConfigError(
                "top_k_heads must be >= 1 (the number of heads summed into the function "
                f"vector), got {self.top_k_heads}."
            )

    @property
    def strength(self) -> float:
        return self.scale

    def extract(self, model, task, *, k, n_extract, seed, template, max_batch, progress):
        # imported here: function_vectors.py loads torch (the CLI reads this module at start-up)
        from tvlens.extraction.function_vectors import function_vector

        tv, table = function_vector(model, task, k, n_extract, self.top_k_heads, seed=seed,
                                    template=template, max_batch=max_batch,
                                    answer_token="first", progress=progress)  # fmt: skip
        return Extracted(tv, {"heads": table})
