"""The comparison's methods by name: what each is (its class), what it is allowed to see
(demonstrations, the test task's label, the instruction) and how it is trained (its
hyper-parameter sweep). The comparison, its configuration and its table read every list of
methods from here.

Adding a method is one class (a :class:`tvlens.compare.methods.SteeringMethod`) and one
:func:`register_method` call; the class is named as ``"module:Class"`` and imported when a
cell is built, so this module imports none of them. An extraction method needs neither: every
registered one is the comparison method ``vector:<name>`` (:func:`method_names` lists them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tvlens.errors import TVLensError
from tvlens.extraction.methods import FunctionVector, HendelTaskVector
from tvlens.extraction.registry import ALL, extraction_choices, get_extraction_method

Variant = dict[str, float]


@dataclass(frozen=True)
class MethodSpec:
    """One method of the comparison.

    Attributes:
        name: Its name in the table.
        cls: ``"module:Class"`` of its :class:`~tvlens.compare.methods.SteeringMethod`.
        kwargs: Passed to the class (e.g. ``k`` for ICL, ``rank`` for the rank-r pair).
        trained: Fitted on the in-domain training queries (never on unseen tasks).
        demonstrations: Reads demonstrations of the test task (ICL, task / function vectors).
        oracle_label: Is told the test query's task (it picks the task's own vector).
        instructed: Sees the instructed prompts; False: the "no instruction" ablation (the
            same queries, bare ``Q:/A:`` prompts, in training and test).
        sweep: ``sweep(cfg)`` -> the hyper-parameter variants tried on one seed and chosen
            on dev (None: one variant, ``{}``).
        inherits: Takes the variant chosen for this other method instead of sweeping.
        seedless: Deterministic: one cell whatever the seeds.
        max_seeds: At most this many seeds (e.g. an ablation row), None: the config's.
        description: One line for the table's legend.
    """

    name: str
    cls: str
    kwargs: dict = field(default_factory=dict)
    trained: bool = False
    demonstrations: bool = False
    oracle_label: bool = False
    instructed: bool = True
    sweep: Callable[[Any], list[Variant]] | None = None
    inherits: str | None = None
    seedless: bool = False
    max_seeds: int | None = None
    description: str = ""

    def build_class(self) -> type:
        module, _, name = self.cls.partition(":")
        return getattr(importlib.import_module(module), name)

    def variants(self, cfg: Any) -> list[Variant]:
        if self.sweep is None or self.inherits is not None:
            return [{}]
        return self.sweep(cfg) if cfg.sweep else [self.sweep(cfg)[cfg.sweep_default_index]]


def variant_label(variant: Variant) -> str:
    """``lr=0.001,scale=0.01`` (``default`` for no hyper-parameters): a cell's file name part."""
    return ",".join(f"{k}={v:g}" for k, v in sorted(variant.items())) or "default"


def _peft_sweep(cfg: Any) -> list[Variant]:
    return [{"lr": lr} for lr in cfg.peft.lrs]


def _atv_frozen_sweep(cfg: Any) -> list[Variant]:
    return [{"lr": lr, "scale": cfg.atv.scale} for lr in cfg.atv.lrs]


def _atv_sweep(cfg: Any) -> list[Variant]:
    """The learning rate at the configured λ, then the other λ values at the middle rate:
    5 runs instead of a 9-run grid (the generator's rate is ``atv.generator_lr_ratio`` times
    the expansion's)."""
    lrs = cfg.atv.lrs
    out = _atv_frozen_sweep(cfg)
    out += [{"lr": lrs[len(lrs) // 2], "scale": s} for s in cfg.atv.scales if s != cfg.atv.scale]
    return out


_BASE = "tvlens.compare.baselines"
_METHODS = "tvlens.compare.methods"
_TUNED = "tvlens.compare.tuned"
REGISTRY: dict[str, MethodSpec] = {}

# The fixed-vector baselines come from the extraction registry (tvlens.extraction.registry,
# entry points included): every extraction method is the comparison method
# ``vector:<its name>`` (baselines.ExtractionVectorMethod), registered on first use, so a new
# extraction method needs nothing here. Two keep the comparison's own class and their table
# names (committed results are labelled so): Hendel's task vector and Todd's function vector,
# extracted over every training instruction, the function vector's heads ranked once on the
# in-domain tasks, as the paper compares them.
VECTOR_PREFIX = "vector:"
OWN_VECTOR_METHODS: dict[str, tuple[str, str, str]] = {
    HendelTaskVector.name: ("task_vector", "TaskVectorMethod",
                            "Hendel et al. 2023; the test task's own vector"),
    FunctionVector.name: ("function_vector", "FunctionVectorMethod",
                          "Todd et al. 2023; the test task's own vector"),
}  # fmt: skip


def vector_method_name(extraction: str) -> str:
    """The comparison's name of the extraction method ``extraction``'s baseline."""
    own = OWN_VECTOR_METHODS.get(extraction)
    return own[0] if own else f"{VECTOR_PREFIX}{extraction}"


def vector_spec(extraction: str) -> MethodSpec:
    """The fixed-vector baseline of a registered extraction method: it reads the test task's
    demonstrations and is told its task (it takes the task's own vector: oracle label)."""
    if extraction in OWN_VECTOR_METHODS:  # no registry read here: it loads the entry points
        name, impl, what = OWN_VECTOR_METHODS[extraction]
        kwargs = {}
    else:
        cls = get_extraction_method(extraction)
        name, impl = vector_method_name(extraction), "ExtractionVectorMethod"
        kwargs = {"extraction": extraction}
        what = f"{cls.description or cls.__name__}; the test task's own vector"
    return MethodSpec(name, f"{_BASE}:{impl}", kwargs, demonstrations=True, oracle_label=True,
                      description=what)  # fmt: skip


def vector_methods() -> list[str]:
    """The fixed-vector baseline of every registered extraction method, by its comparison
    name (registered here on first use)."""
    names = []
    for extraction in extraction_choices():
        if extraction == ALL:
            continue
        name = vector_method_name(extraction)
        if name not in REGISTRY:
            register_method(vector_spec(extraction))
        names.append(name)
    return names


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the comparison's methods (its name must be new)."""
    if spec.name in REGISTRY:
        raise TVLensError(f"A compare method named {spec.name!r} is already registered.")
    if spec.inherits is not None and spec.inherits not in REGISTRY:
        raise TVLensError(
            f"{spec.name!r} inherits from {spec.inherits!r}, which is not registered."
        )
    REGISTRY[spec.name] = spec
    return spec


for _spec in (
    MethodSpec("zero_shot", f"{_METHODS}:ZeroShot", seedless=True,
               description="the instructed query alone"),
    MethodSpec("zero_shot_noinstr", f"{_METHODS}:ZeroShot", seedless=True, instructed=False,
               description="ablation: the bare query, no instruction"),
    MethodSpec("icl_5", f"{_METHODS}:ICL", {"k": 5}, demonstrations=True,
               description="instruction, 5 demonstrations, query"),
    MethodSpec("icl_16", f"{_METHODS}:ICL", {"k": 16}, demonstrations=True,
               description="instruction, 16 demonstrations, query"),
    *(vector_spec(name) for name in OWN_VECTOR_METHODS),  # task_vector, function_vector
    MethodSpec("retrieval", "tvlens.compare.retrieval:RetrievalMethod",
               description="ELICIT-style: the in-domain task vector nearest the query, no label"),
    MethodSpec("lora_qv", f"{_TUNED}:PeftMethod", {"kind": "lora_qv"}, trained=True,
               sweep=_peft_sweep, description="LoRA on the q, v projections"),
    MethodSpec("lora_all", f"{_TUNED}:PeftMethod", {"kind": "lora_all"}, trained=True,
               sweep=_peft_sweep, description="LoRA on every linear layer"),
    MethodSpec("prefix", f"{_TUNED}:PeftMethod", {"kind": "prefix"}, trained=True,
               sweep=_peft_sweep, description="prefix tuning from real tokens"),
    MethodSpec("atv", f"{_TUNED}:ATVMethod", {"kind": "atv"}, trained=True,
               sweep=_atv_sweep, description="ATV as published: generator trained, full rank"),
    MethodSpec("atv_noinstr", f"{_TUNED}:ATVMethod", {"kind": "atv"}, trained=True,
               instructed=False, inherits="atv", max_seeds=1,
               description="ablation: ATV on bare prompts (atv's chosen variant)"),
    MethodSpec("atv_lora_budget", f"{_TUNED}:ATVMethod", {"kind": "lora_budget"},
               trained=True, sweep=_atv_frozen_sweep,
               description="frozen generator, expansion at LoRA-q,v's parameter count"),
    MethodSpec("atv_prefix_budget", f"{_TUNED}:ATVMethod", {"kind": "prefix_budget"},
               trained=True, sweep=_atv_frozen_sweep,
               description="frozen generator, expansion at prefix tuning's parameter count"),
):  # fmt: skip
    register_method(_spec)


def rank_pair_specs(rank: int) -> tuple[MethodSpec, MethodSpec, MethodSpec]:
    """The equal-rank methods at ``rank``: a frozen generator with a rank-``rank`` expansion
    (``atv_r{rank}``), rank-``rank`` LoRA on each block's residual write (``lora_r{rank}``),
    and the static affine ATV of the paper's theorem at the same rank and sites
    (``atv_affine_r{rank}``, swept over LoRA's learning rates: it shares LoRA's start and
    scaling, see :class:`tvlens.compare.tuned.StaticAffineATVMethod`)."""
    return (
        MethodSpec(f"atv_r{rank}", f"{_TUNED}:ATVMethod", {"kind": "rank", "rank": rank},
                   trained=True, sweep=_atv_frozen_sweep,
                   description=f"frozen generator, rank-{rank} expansion (pair of lora_r{rank})"),
        MethodSpec(f"lora_r{rank}", f"{_TUNED}:PeftMethod", {"kind": "lora_sites", "rank": rank},
                   trained=True, sweep=_peft_sweep,
                   description=f"rank-{rank} LoRA on each block's residual write (pair of "
                   f"atv_r{rank} and atv_affine_r{rank})"),
        MethodSpec(f"atv_affine_r{rank}", f"{_TUNED}:StaticAffineATVMethod",
                   {"kind": "affine", "rank": rank}, trained=True, sweep=_peft_sweep,
                   description=f"static affine ATV (the theorem's form): b + U V^T a at each "
                   f"MLP output, rank {rank}, no generator; pair of lora_r{rank}"),
    )  # fmt: skip


# The pairs the comparison runs (the paper's ranks 1 and 8); other ranks: rank_pair(rank).
PAIR_RANKS = (1, 8)
for _rank in PAIR_RANKS:
    for _spec in rank_pair_specs(_rank):
        register_method(_spec)


def rank_pair(rank: int) -> tuple[str, str]:
    """The names ``(lora_r{rank}, atv_r{rank})`` of the equal-rank pair at any ``rank >= 1``
    (registered on first use, with ``atv_affine_r{rank}``); a bad rank is refused in one line,
    before any model loads."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise TVLensError(f"rank (--rank) must be an integer >= 1, got {rank!r}.")
    specs = rank_pair_specs(rank)
    for spec in specs:
        if spec.name not in REGISTRY:
            register_method(spec)
    atv, lora = specs[:2]
    return lora.name, atv.name


# Every built-in method, in the order of the table.
METHODS: tuple[str, ...] = tuple(REGISTRY)


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims as data: ``tests`` are ``(a, b, group)`` — method ``a``
    against method ``b`` on the same test queries of ``group`` (``in_domain`` / ``unseen``);
    ``rule`` ``beats`` (every paired interval above 0) or ``equal`` (within the equivalence
    margin, or better). ``part_of``: reported inside that claim's verdict."""

    name: str
    tests: tuple[tuple[str, str, str], ...]
    rule: str = "beats"
    part_of: str | None = None

    def methods(self) -> set[str]:
        return {m for a, b, _ in self.tests for m in (a, b)}


# Kang et al. 2025's claims, as the comparison tests them (tvlens.compare.report.verdicts).
_EQUAL_RANK = "equal rank: ATV matches LoRA"
CLAIMS: tuple[Claim, ...] = (
    Claim("ATV beats ICL and fixed task / function vectors (in-domain)",
          tuple(("atv", b, "in_domain")
                for b in ("icl_5", "task_vector", "function_vector", "retrieval"))),
    Claim("ATV generalises to unseen tasks",
          tuple(("atv", b, "unseen") for b in ("zero_shot", "icl_5", "retrieval", "lora_qv"))),
    Claim(_EQUAL_RANK, tuple((atv, f"lora_r{r}", "in_domain") for r in PAIR_RANKS
                             for atv in (f"atv_r{r}", f"atv_affine_r{r}")), "equal"),
    Claim("ATV beats prefix tuning", (("atv", "prefix", "in_domain"),), part_of=_EQUAL_RANK),
)  # fmt: skip
# The method whose inference time is the reference of the others' (the target alone).
TIME_REFERENCE = "zero_shot"


def check_claims(claims: tuple[Claim, ...] | None = None) -> None:
    """Every method a claim (default: :data:`CLAIMS`) names is registered, every group is a
    split and every rule is known (checked when a comparison is configured)."""
    claims = CLAIMS if claims is None else claims
    for c in claims:
        missing = sorted(c.methods() - set(REGISTRY))
        if missing:
            raise TVLensError(f"The claim {c.name!r} names unregistered methods {missing}.")
        if c.rule not in ("beats", "equal") or any(
            g not in ("in_domain", "unseen") for *_, g in c.tests
        ):
            raise TVLensError(f"The claim {c.name!r} has a bad rule or group.")
        if c.part_of is not None and c.part_of not in {x.name for x in claims}:
            raise TVLensError(f"The claim {c.name!r} is part of an unknown claim {c.part_of!r}.")


def method_names() -> list[str]:
    """Every method the comparison offers: the registered ones (:data:`METHODS` first, in the
    order of the table) and the fixed-vector baseline of every extraction method."""
    vector_methods()
    return list(REGISTRY)


def get_method_spec(name: str) -> MethodSpec:
    if name not in REGISTRY and name.startswith(VECTOR_PREFIX):
        extraction = name.removeprefix(VECTOR_PREFIX)
        if extraction in OWN_VECTOR_METHODS:
            raise TVLensError(
                f"{name!r} is {vector_method_name(extraction)!r} in the comparison: use that name."
            )
        if extraction in extraction_choices() and extraction != ALL:
            register_method(vector_spec(extraction))
    if name not in REGISTRY:
        raise TVLensError(f"Unknown compare method {name!r}; use some of {method_names()}.")
    return REGISTRY[name]


def peft_method(name: str, config: Any, description: str = "") -> MethodSpec:
    """A comparison method from a user's peft config (``LoraConfig``, ``PrefixTuningConfig``,
    ...): trained like the built-in LoRA rows, its learning rate swept over ``cfg.peft.lrs``.
    Pass it in ``run_compare(methods=[...])``."""
    what = description or f"peft: {type(config).__name__}"
    return MethodSpec(name, f"{_TUNED}:PeftMethod", {"config": config}, trained=True,
                      sweep=_peft_sweep, description=what)  # fmt: skip


def as_method_name(method: str | MethodSpec) -> str:
    """A method by name, or a user's :class:`MethodSpec` (registered on first use; the same
    name with another spec is refused)."""
    if isinstance(method, str):
        return method
    if not isinstance(method, MethodSpec):
        raise TVLensError(
            f"A compare method is a name or a MethodSpec (e.g. peft_method(name, LoraConfig(...)))"
            f", got {type(method).__name__}."
        )
    old = REGISTRY.get(method.name)
    if old is None:
        register_method(method)
    elif old is not method and old != method:
        raise TVLensError(
            f"A compare method named {method.name!r} is already registered with another "
            "specification: give yours another name."
        )
    return method.name


def methods_where(**props: Any) -> list[str]:
    """The registered methods whose properties equal ``props`` (e.g. ``trained=True``)."""
    return [n for n, s in REGISTRY.items() if all(getattr(s, k) == v for k, v in props.items())]
