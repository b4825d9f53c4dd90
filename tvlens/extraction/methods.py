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
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from tvlens.errors import ConfigError
from tvlens.extraction import defaults as D
from tvlens.runs.config import MAX_BATCH


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

    top_k_heads: int = option(D.FV_TOP_K_HEADS, "Heads in a function vector.")
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


# ---------------------------------------------------------------------- the field's other methods
# Each is written by its own module (icv.py, i2cl.py, state_vector.py, ltv.py: torch, oracle
# tests); the classes sit here so that the registry and the CLI read them without torch. What
# an extraction gives the report is a ``[n_layers, d_model]`` summary of what is written (a
# TaskVector, saved with the report), and the full result under ``extras["result"]`` (what
# the intervention is built from).


@dataclass(frozen=True)
class ResultWrite(ExtractionMethod):
    """A method whose extraction keeps its module's own result object under
    ``extras["result"]``, whose ``.intervention(**choice)`` says what is written (ICV, I2CL,
    state vectors, LTV)."""

    def intervention(self, model: Any, extracted: Extracted, **choice: Any) -> Any:
        if "result" not in extracted.extras:
            raise ConfigError(
                f"{self.name}: this extraction has no result (extras['result']); its "
                "intervention is built from the result of its extract(): extract again."
            )
        return extracted.extras["result"].intervention(**choice)


def _tuple(value: Any) -> Any:
    """A sequence option as a tuple (options from JSON arrive as lists; a frozen method
    object compares and hashes its options, and an object from a list equals one from the
    tuple)."""
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class ICV(ResultWrite):
    """Liu et al. 2024 ("In-context Vectors", ICML; :mod:`tvlens.extraction.icv`): the first
    principal direction of the demonstrations' latent shifts ``H(y) - H(x)``, one vector per
    layer; every layer's MLP output is turned toward it with strength α, its norm kept. α is
    chosen on dev queries from ``alphas``."""

    name: ClassVar[str] = "icv"
    label: ClassVar[str] = "in-context vector (ICV, every layer)"
    column: ClassVar[str] = "in-context vector (every layer)"
    title: ClassVar[str] = "in-context vector"
    description: ClassVar[str] = (
        "Liu et al. 2024: the first principal direction of the demonstrations' latent shifts "
        "H(y) - H(x), added to every layer's MLP output with its norm kept"
    )
    # the PCA runs over the demonstrations' shifts
    min_k: ClassVar[int] = 2

    alpha: float = option(
        D.ICV_ALPHA, "Strength λ of the shift (the official README's example: 0.1), when it is not "
        "tuned (alphas empty)."
    )  # fmt: skip
    rank: int = option(D.ICV_RANK, "Principal components summed into the ICV (official: 1).")
    pair: str = option(
        D.ICV_PAIR, "'separate': H(output) - H(input), bare texts (official); 'joined': "
        "H(query prompt + answer) - H(query prompt)."
    )  # fmt: skip
    alphas: Sequence[float] = option(
        D.ICV_ALPHAS,
        "Strengths α tried on dev queries, the best kept (empty: alpha alone).",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        if self.pair not in ("separate", "joined"):
            raise ConfigError(f"ICV's pair must be 'separate' or 'joined', got {self.pair!r}.")
        if self.rank < 1:
            raise ConfigError(f"ICV's rank must be >= 1, got {self.rank}.")

    def extract(self, model, task, *, k, n_extract, seed, template, max_batch=MAX_BATCH,
                progress=False):  # fmt: skip
        """The ICV from ``k`` demonstrations of ``task`` (``n_extract`` is unused: ICV reads
        one pair of passes per demonstration, no dummy queries)."""
        # imported here: icv.py and vectors.py load torch (the CLI reads this module at start-up)
        from tvlens.extraction.icv import in_context_vector
        from tvlens.extraction.vectors import TaskVector  # torch too

        res = in_context_vector(model, task, k=k, seed=seed, template=template,
                                alpha=self.alpha, rank=self.rank, pair=self.pair,
                                batch_size=max(1, min(64, max_batch)))  # fmt: skip
        info = {**res.info, "alpha": res.alpha, "written": "mlp_module, icv"}
        tv = TaskVector(res.vectors, res.layers, res.model_name, task.name, self.name, k,
                        info=info)  # fmt: skip
        return Extracted(tv, {"result": res})

    def dev_grid(self, model: Any, extracted: Extracted) -> list[dict[str, Any]]:
        return [{"alpha": a} for a in (self.alphas or (self.alpha,))]


@dataclass(frozen=True)
class I2CL(ResultWrite):
    """Li et al. 2025 ("Implicit In-context Learning", ICLR; :mod:`tvlens.extraction.i2cl`):
    the demonstrations' mean attention and MLP outputs (context vectors), mixed into every
    layer's module outputs as ``c_keep·h + c_ctx·v`` with coefficients calibrated on the
    demonstrations. Nothing is tuned on dev queries. The saved vector is the attention
    context vectors; the coefficients are in its ``info``."""

    name: ClassVar[str] = "i2cl"
    label: ClassVar[str] = "implicit ICL (I2CL, every layer)"
    column: ClassVar[str] = "implicit ICL (every layer)"
    title: ClassVar[str] = "implicit ICL"
    description: ClassVar[str] = (
        "Li et al. 2025: the demonstrations' mean attention and MLP outputs mixed into every "
        "layer with coefficients calibrated on the demonstrations"
    )
    # calibration batches of batch_size (2) demonstrations
    min_k: ClassVar[int] = 2

    epochs: int = option(D.I2CL_EPOCHS, "Calibration epochs (official: 100).")
    lr: float = option(D.I2CL_LR, "AdamW learning rate (official: 0.01).")
    weight_decay: float = option(D.I2CL_WEIGHT_DECAY, "AdamW weight decay (official: 1e-3).")
    batch_size: int = option(D.I2CL_BATCH_SIZE, "Calibration examples per step (official: 2).")
    noise_scale: float = option(
        D.I2CL_NOISE_SCALE, "Training noise, times each injected output's norm (official: "
        "0.001; 0 turns it off)."
    )  # fmt: skip
    init: Sequence[float] = option(
        D.I2CL_INIT, "Initial (context, keep) coefficients (official: 0.1, 1.0)."
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "init", _tuple(self.init))

    def extract(self, model, task, *, k, n_extract, seed, template, max_batch=MAX_BATCH,
                progress=False):  # fmt: skip
        """I2CL from ``k`` demonstrations of ``task`` (``n_extract`` is unused: the official
        method calibrates on the demonstrations themselves)."""
        # imported here: i2cl.py and vectors.py load torch (the CLI reads this module at start-up)
        from tvlens.extraction.i2cl import MODULES, implicit_icl
        from tvlens.extraction.vectors import TaskVector  # torch too

        res = implicit_icl(model, task, k=k, seed=seed, template=template, epochs=self.epochs,
                           lr=self.lr, weight_decay=self.weight_decay,
                           batch_size=self.batch_size, noise_scale=self.noise_scale,
                           init=self.init, progress=progress,
                           max_batch=max(1, min(64, max_batch)))  # fmt: skip
        # The attention modules' context vectors; the MLP ones stay in the result.
        tv = TaskVector(res.context[:, MODULES.index("attn")], res.layers, res.model_name,
                        task.name, self.name, k, where="attn_module",
                        info={**res.info, "coef": res.coef.tolist(), "modules": list(MODULES),
                              "losses": list(res.losses),
                              "written": "attn_module and mlp_module, mix"})  # fmt: skip
        return Extracted(tv, {"result": res})

    def dev_grid(self, model: Any, extracted: Extracted) -> list[dict[str, Any]]:
        return [{}]  # calibrated on the demonstrations: nothing is tuned on dev


@dataclass(frozen=True)
class StateVector(ResultWrite):
    """Li et al. 2024 ("In-Context Learning State Vector with Inner and Momentum
    Optimization", NeurIPS; :mod:`tvlens.extraction.state_vector`): attention-output states
    at the separators, inner and momentum optimised, replacing the query's attention outputs
    in layers ``0..L``; ``L`` is chosen on dev queries as the paper does (every layer tried),
    unless ``layer`` is set. The saved vector is the attention output written at each layer."""

    name: ClassVar[str] = "state_vector"
    label: ClassVar[str] = "state vector (replace attn, layers 0..L)"
    column: ClassVar[str] = "state vector (last layer L)"
    title: ClassVar[str] = "state vector"
    description: ClassVar[str] = (
        "Li et al. 2024: attention-output states at the separators, inner and momentum "
        "optimised, replacing the query's attention outputs in the first layers"
    )
    min_k: ClassVar[int] = 1

    optimizer: str = option(
        D.SV_OPTIMIZER, "none (the query's state), inner (mean of the last states), momentum."
    )
    layer: int | None = option(
        None, "Last layer written (layers 0..layer); default: chosen on dev queries (the "
        "result alone: 0.4 * n_layers - 1)."
    )  # fmt: skip
    inner_window: int = option(
        D.SV_INNER_WINDOW, "States averaged by the inner optimisation (official: 7)."
    )
    momentum_weights: Sequence[float] = option(
        D.SV_MOMENTUM_WEIGHTS,
        "Weights of the last state differences (official: 1,2,4,8,16,0).",
    )
    momentum_lr: float = option(D.SV_MOMENTUM_LR, "Momentum step size (official: 1).")
    groups: int = option(
        D.SV_GROUPS, "Divide-and-conquer aggregation over this many groups of k (0: off)."
    )
    shuffles: int = option(
        D.SV_SHUFFLES, "Orders of each group averaged in the aggregation (official: 5)."
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "momentum_weights", _tuple(self.momentum_weights))

    def extract(self, model, task, *, k, n_extract, seed, template, max_batch=MAX_BATCH,
                progress=False):  # fmt: skip
        """The state vector from ``n_extract`` ``k``-shot prompts of ``task`` with dummy
        queries (or the aggregate of ``groups`` groups of ``k``)."""
        # imported here: state_vector.py and vectors.py load torch (the CLI reads this module
        # at start-up)
        from tvlens.extraction.state_vector import state_vector
        from tvlens.extraction.vectors import TaskVector  # torch too

        res = state_vector(model, task, k, n_extract, seed, template, self.optimizer,
                           self.layer, self.inner_window, self.momentum_weights,
                           self.momentum_lr, self.groups, self.shuffles,
                           max_batch)  # fmt: skip
        layers = tuple(range(res.outputs.shape[0]))
        tv = TaskVector(res.outputs, layers, res.model_name, task.name, self.name, n_extract,
                        where="attn_module",
                        info={**res.info, "optimizer": res.optimizer, "layer": res.layer,
                              "written": "attn_module at the query, layers 0..L"})  # fmt: skip
        return Extracted(tv, {"result": res})

    def dev_grid(self, model: Any, extracted: Extracted) -> list[dict[str, Any]]:
        if self.layer is not None:
            return [{"layer": self.layer}]
        return [{"layer": layer} for layer in range(model.n_layers)]


@dataclass(frozen=True)
class LTV(ResultWrite):
    """Saglam et al. 2025 ("Learning Task Representations from In-Context Learning", ACL
    Findings; :mod:`tvlens.extraction.ltv`): weights over the heads' mean outputs learned by
    gradient descent (model frozen), the vector of each layer added after it at the last
    token. Nothing is tuned on dev queries."""

    name: ClassVar[str] = "ltv"
    label: ClassVar[str] = "learned task vector (add, every layer)"
    column: ClassVar[str] = "learned task vector (every layer)"
    title: ClassVar[str] = "learned task vector"
    description: ClassVar[str] = (
        "Saglam et al. 2025: weights over the heads' mean outputs learned by gradient "
        "descent, added after every layer"
    )
    min_k: ClassVar[int] = 1

    steps: int = option(D.LTV_STEPS, "Adam steps (official: up to 100000; CPU default 100).")
    lr: float = option(D.LTV_LR, "Adam learning rate (official: 5e-5 over 100000 steps).")
    batch_size: int = option(D.LTV_BATCH_SIZE, "Training prompts per step (official: 32).")
    train_k: int | None = option(
        None, "Demonstrations (labels shuffled) in training prompts; default: 5 (official), "
        "at most the examples the task's train split holds besides the query."
    )  # fmt: skip
    train_on: str = option(D.LTV_TRAIN_ON, "shuffled (official) or zero_shot training prompts.")
    combine: str = option(
        D.LTV_COMBINE, "heads (each head's output) or blocks (official language code)."
    )

    def extract(self, model, task, *, k, n_extract, seed, template, max_batch=MAX_BATCH,
                progress=False):  # fmt: skip
        """The basis from ``n_extract`` clean ``k``-shot prompts of ``task``, then ``steps``
        training steps on prompts of ``task``."""
        # imported here: ltv.py and vectors.py load torch (the CLI reads this module at start-up)
        from tvlens.extraction.ltv import ltv
        from tvlens.extraction.vectors import TaskVector  # torch too

        # the official 5 unless the train split is smaller (as the report's default k is)
        train_k = min(D.LTV_TRAIN_K, len(task) - 1) if self.train_k is None else self.train_k
        res = ltv(model, task, k, n_extract, seed, template, self.steps, self.lr,
                  self.batch_size, train_k, self.train_on, self.combine,
                  progress, max_batch)  # fmt: skip
        vecs = res.vectors
        tv = TaskVector(vecs, tuple(range(vecs.shape[0])), res.model_name, task.name,
                        self.name, n_extract,
                        info={**res.info, "best_step": res.best_step,
                              "weights": res.weights.tolist(), "losses": list(res.losses),
                              "written": "resid_post at the query, every layer, add"})  # fmt: skip
        return Extracted(tv, {"result": res})

    def dev_grid(self, model: Any, extracted: Extracted) -> list[dict[str, Any]]:
        return [{}]  # learned on training prompts: nothing is tuned on dev
