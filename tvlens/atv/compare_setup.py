"""What a comparison is run on: its configuration and presets, its tasks and their splits, and
the context every (method, seed) cell reads (:mod:`tvlens.atv.compare` runs the cells)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvlens.atv.data import ATVSplits, get_atv_suite, split_queries
from tvlens.errors import TVLensError, UnknownTaskError
from tvlens.models.loading import TVModel
from tvlens.runs import CELLS_DIR
from tvlens.tasks.core import Task, TaskSuite
from tvlens.training.config import RunConfig

# Every method, in the order of the table. ``icl_16`` runs where the context allows.
METHODS: tuple[str, ...] = (
    "zero_shot",
    "icl_5",
    "icl_16",
    "task_vector",
    "function_vector",
    "lora_qv",
    "lora_all",
    "prefix",
    "atv",
    "atv_lora_budget",
    "atv_prefix_budget",
    "static_atv",
    "lora_r1",
)
TRAINED = {"lora_qv", "lora_all", "prefix", "atv", "atv_lora_budget", "atv_prefix_budget",
           "static_atv", "lora_r1"}  # fmt: skip
NEEDS_DEMOS = {"icl_5", "icl_16", "task_vector", "function_vector"}
SEEDLESS = {"zero_shot"}  # deterministic: one cell, whatever the seeds

# The function-vector datasets (Todd et al. 2023) by folder: ``fv/<task>`` resolves to
# ``<data_dir>/abstractive/<task>.json`` or ``<data_dir>/extractive/<task>.json``.
FV_ALIAS = "fv"
CPU_IN_DOMAIN = [
    "fv/antonym", "fv/capitalize", "fv/capitalize_first_letter", "fv/country-capital",
    "fv/english-french", "fv/english-spanish", "fv/present-past", "fv/singular-plural",
    "fv/landmark-country", "fv/person-sport", "fv/product-company", "fv/sentiment",
    "fv/next_item", "fv/lowercase_first_letter", "fv/choose_first_of_3", "fv/choose_last_of_3",
    "fv/adjective_v_verb_3", "fv/animal_v_object_3", "fv/color_v_animal_3",
    "fv/fruit_v_animal_3",
]  # fmt: skip
CPU_UNSEEN = [
    "fv/english-german", "fv/prev_item", "fv/capitalize_last_letter",
    "fv/choose_middle_of_3", "fv/verb_v_adjective_3",
]  # fmt: skip


@dataclass(frozen=True)
class CompareConfig(RunConfig):
    """Everything that determines a comparison (``DIR/config.json``).

    Tasks are ``alias/task`` references: ``fv/<task>`` is a file of the function-vector
    datasets (``data_dir``), any other alias a suite spec in ``suites`` (or a suite name
    :func:`tvlens.atv.data.get_atv_suite` knows, with its defaults).
    """

    _kind = "compare"

    target: str = ""
    target_revision: str | None = None
    in_domain: list = field(default_factory=lambda: list(CPU_IN_DOMAIN))
    unseen: list = field(default_factory=lambda: list(CPU_UNSEEN))
    suites: dict = field(default_factory=dict)
    data_dir: str | None = None
    max_input_chars: int = 80  # drop long inputs (e.g. news articles): short prompts only
    template: str | None = None  # None: the target's own (arrow for models tvlens did not train)
    n_train: int = 90
    n_dev: int = 20
    n_test: int = 50
    data_seed: int = 0
    seeds: int = 3
    demo_seeds: int | None = None  # seeds of the demonstration methods (None: ``seeds``)
    methods: list = field(default_factory=lambda: list(METHODS))
    shots: list = field(default_factory=lambda: [5, 16])
    # task vectors (Hendel) and function vectors (Todd): both read the task's demonstrations
    tv_k: int = 5
    n_extract: int = 16
    fv_top_heads: int = 10
    fv_aie_tasks: int = 4  # in-domain tasks whose mean AIE ranks the heads (Todd et al.)
    fv_aie_prompts: int = 16
    sweep_layers: list | None = None  # layers tried on dev (None: every layer)
    # training (every trained method: the same queries, epochs and batch size)
    epochs: int = 15
    batch_size: int = 8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    peft_lr: float = 1e-3  # LoRA, prefix tuning, static ATV
    lora_rank: int = 8
    lora_alpha_ratio: float = 2.0
    prefix_tokens: int = 10
    static_scale: float = 1.0
    # ATV (Kang et al. 2025; official code: λ 0.001, lr 5e-4, weight decay 1e-5)
    atv_generator: str | None = None  # None: a separate copy of the target
    atv_generator_stop_at_layer: int | None = None
    atv_scale: float = 1e-3
    atv_lr: float = 5e-4
    atv_weight_decay: float = 1e-5
    atv_positions: str = "all"
    eval_batch_size: int = 32
    mixed_precision: str = "no"
    scale_note: str = ""  # what the preset scaled down, written into the output

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise TVLensError(f"Unknown method(s) {unknown}; use some of {list(METHODS)}.")
        if self.seeds < 1:
            raise TVLensError(f"seeds must be >= 1, got {self.seeds}.")
        if min(self.n_train, self.n_dev, self.n_test) < 1:
            raise TVLensError("n_train, n_dev and n_test must all be >= 1.")
        overlap = sorted(set(self.in_domain) & set(self.unseen))
        if overlap:
            raise TVLensError(f"Tasks {overlap} are both in-domain and unseen; pick one.")
        if not self.in_domain or not self.unseen:
            raise TVLensError("The comparison needs at least one in-domain and one unseen task.")

    def fingerprint(self) -> dict:
        """What a finished cell depends on: everything but which methods and how many seeds
        are asked for (adding a method or a seed reuses the cells already there)."""
        d = self.to_dict()
        for k in ("methods", "seeds", "demo_seeds"):
            d.pop(k, None)
        return d


PRESETS: dict[str, CompareConfig] = {
    # Seconds: the synthetic setting's target (a tvlens-trained model that does first / last of
    # symbol lists in context, tvlens.atv.data.SYNTHETIC_TARGET), in-domain tasks whose query
    # tells the task (its length) and unseen list tasks of other lengths / ops.
    "tiny": CompareConfig(
        in_domain=["al/last_of_2", "al/first_of_3", "al/last_of_4"],
        unseen=["f2/first=first_of_2", "l3/last=last_of_3"],
        suites={
            "al": {"name": "atv_lists"},
            "f2": {
                "name": "lists",
                "n_symbols": 16,
                "min_len": 2,
                "max_len": 2,
                "ops": ["first"],
                "n_examples": 200,
                "seed": 11,
            },
            "l3": {
                "name": "lists",
                "n_symbols": 16,
                "min_len": 3,
                "max_len": 3,
                "ops": ["last"],
                "n_examples": 200,
                "seed": 12,
            },
        },
        n_train=24,
        n_dev=8,
        n_test=16,
        seeds=3,
        n_extract=8,
        fv_top_heads=4,
        fv_aie_tasks=2,
        fv_aie_prompts=8,
        epochs=2,
        batch_size=8,
        peft_lr=5e-3,
        lora_rank=4,
        prefix_tokens=4,
        atv_scale=1.0,
        atv_lr=1e-3,
        eval_batch_size=64,
        scale_note="tiny: 24 train / 8 dev / 16 test queries per task, 2 epochs (mechanics).",
    ),
    # SmolLM2-135M on a 2-core CPU within about an hour: every method, 3 seeds, scaled down
    # (scale_note); the generator is SmolLM2's own first 4 blocks.
    "cpu": CompareConfig(
        target="smollm2-135m",
        n_train=30,
        n_dev=10,
        n_test=50,
        seeds=3,
        demo_seeds=1,
        shots=[5, 16],
        n_extract=8,
        fv_top_heads=10,
        fv_aie_tasks=2,
        fv_aie_prompts=8,
        sweep_layers=[3, 6, 9, 12, 15, 18, 21],
        epochs=1,
        batch_size=8,
        peft_lr=2e-3,
        lora_rank=8,
        prefix_tokens=10,
        atv_generator="smollm2-135m",
        atv_generator_stop_at_layer=4,
        atv_scale=1e-2,
        atv_lr=1e-3,
        eval_batch_size=50,
        scale_note=(
            "cpu: 30 (not 90) training queries per task, 1 epoch (not 15), batch 8 (not 1), "
            "generator = SmolLM2's first 4 blocks (not GPT-2), λ 0.01 (not 0.001), ATV lr 1e-3; "
            "demonstration methods 1 seed; TV/FV layers swept 3..21 step 3."
        ),
    ),
    # The paper's recipe (official code): 90 queries per task, 15 epochs, batch 1, GPT-2
    # generator fully trained, λ 0.001, lr 5e-4; bf16 autocast on the GPU.
    "gpu": CompareConfig(
        n_train=90,
        n_dev=20,
        n_test=50,
        epochs=15,
        batch_size=1,
        atv_generator="gpt2",
        atv_scale=1e-3,
        atv_lr=5e-4,
        mixed_precision="bf16",
        eval_batch_size=64,
        scale_note="gpu: the paper's recipe (Kang et al. 2025, official code).",
    ),
}


def get_compare_preset(name: str) -> CompareConfig:
    if name not in PRESETS:
        raise TVLensError(f"Unknown compare preset {name!r}; use one of {sorted(PRESETS)}.")
    return PRESETS[name]


# ---------------------------------------------------------------------------- tasks


def resolve_task(ref: str, cfg: CompareConfig, cache: dict[str, TaskSuite]) -> Task:
    """The task an ``alias/task`` reference names (see :class:`CompareConfig`);
    ``alias/task=new_name`` renames it."""
    ref, _, rename = ref.partition("=")
    task = _resolve(ref, cfg, cache)
    return Task(rename, task.examples, family=task.family) if rename else task


def _resolve(ref: str, cfg: CompareConfig, cache: dict[str, TaskSuite]) -> Task:
    alias, sep, name = ref.partition("/")
    if not sep or not name:
        raise UnknownTaskError(
            f"Task reference {ref!r} is not 'alias/task' (e.g. 'fv/antonym', 'words/antonyms')."
        )
    if alias == FV_ALIAS:
        if cfg.data_dir is None:
            raise TVLensError(
                f"Task {ref!r} is a function-vector dataset: pass --data pointing at the folder "
                "that holds abstractive/ and extractive/ (e.g. ../shared/data/function_vectors)."
            )
        root = Path(cfg.data_dir)
        for sub in ("abstractive", "extractive", "."):
            path = root / sub / f"{name}.json"
            if path.is_file():
                return Task.from_json(path, name=name)
        raise UnknownTaskError(f"No {name}.json under {str(root)!r} (abstractive/ or extractive/).")
    if alias not in cache:
        cache[alias] = get_atv_suite(cfg.suites.get(alias, {"name": alias}))
    return cache[alias][name]


def _usable(task: Task, max_chars: int) -> Task:
    """Distinct short inputs only (first occurrence kept)."""
    seen: dict[str, Any] = {}
    for ex in task.examples:
        if len(ex.input) <= max_chars and ex.input not in seen:
            seen[ex.input] = ex
    return Task(task.name, tuple(seen.values()), family=task.family)


@dataclass(frozen=True)
class CompareData:
    """The in-domain and unseen tasks, each split into disjoint train / dev / test queries
    (the same split for every method and seed)."""

    in_domain: ATVSplits
    unseen: ATVSplits
    sources: dict[str, str]

    def groups(self) -> dict[str, ATVSplits]:
        return {"in_domain": self.in_domain, "unseen": self.unseen}

    def describe(self) -> dict[str, Any]:
        return {
            "in_domain": self.in_domain.tasks,
            "unseen": self.unseen.tasks,
            "sources": self.sources,
            "queries_per_task": {
                g: {k: v // max(len(s.tasks), 1) for k, v in s.counts().items()}
                for g, s in self.groups().items()
            },
            "note": "unseen tasks: never seen by any trained method; their train queries serve "
            "only as demonstrations for ICL, task vectors and function vectors.",
        }


def load_compare_data(cfg: CompareConfig, template: str) -> CompareData:
    cache: dict[str, TaskSuite] = {}
    out, sources = {}, {}
    for group, refs in (("in_domain", cfg.in_domain), ("unseen", cfg.unseen)):
        tasks = []
        for ref in refs:
            t = _usable(resolve_task(ref, cfg, cache), cfg.max_input_chars)
            if t.name in sources:  # e.g. "first" of two list suites: name it by its alias
                t = Task(ref.replace("/", "_").split("=")[0], t.examples, family=t.family)
            if t.name in sources:
                raise TVLensError(f"Task {ref!r} is listed twice.")
            sources[t.name] = ref
            tasks.append(t)
        suite = TaskSuite(group, tuple(tasks))
        out[group] = split_queries(
            suite, cfg.n_train, cfg.n_dev, cfg.n_test, template, cfg.data_seed
        )
    return CompareData(out["in_domain"], out["unseen"], sources)


def merged(a: ATVSplits, b: ATVSplits) -> ATVSplits:
    return ATVSplits(a.train + b.train, a.dev + b.dev, a.test + b.test, a.tasks + b.tasks)


# ---------------------------------------------------------------------------- cells


@dataclass
class CompareContext:
    """What every cell reads: the configuration, the frozen target, the data, where to write."""

    cfg: CompareConfig
    target: TVModel
    data: CompareData
    out: Path
    device: str
    template: str
    progress: bool = True
    cache: dict = field(default_factory=dict)  # shared between cells (e.g. FV head ranking)


def cell_path(out: Path, method: str, seed: int) -> Path:
    return out / CELLS_DIR / f"{method}__seed{seed}.json"


def method_seeds(cfg: CompareConfig, method: str) -> list[int]:
    if method in SEEDLESS:
        return [0]
    if method in NEEDS_DEMOS and cfg.demo_seeds is not None:
        return list(range(cfg.demo_seeds))
    return list(range(cfg.seeds))


def compare_cells(cfg: CompareConfig) -> list[tuple[str, int]]:
    """Every (method, seed) cell of the comparison, in the order they are computed."""
    return [(m, s) for m in cfg.methods for s in method_seeds(cfg, m)]


def compare_context(
    cfg: CompareConfig, target: TVModel, out: Path, progress: bool = True
) -> CompareContext:
    """What every cell reads, for a loaded ``target``: its template and the data split."""
    template = target.template(cfg.template)
    template = template if isinstance(template, str) else template.name
    data = load_compare_data(cfg, template)
    return CompareContext(cfg, target, data, out, str(target.device), template, progress)
