"""The comparison's tasks: ``alias/task`` references resolved to tasks, their disjoint train /
dev / test queries, their instructions (training and held-out), categories, and the input
overlap of every task with the in-domain ones (the unseen split's check). ``cfg`` is a
:class:`tvlens.compare.setup.CompareConfig`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tvlens.atv.data import ATVSplits, get_atv_suite, hash_text, split_queries
from tvlens.errors import TVLensError, UnknownTaskError
from tvlens.tasks.core import Task, TaskSuite
from tvlens.tasks.instructions import load_instructions
from tvlens.tasks.prompts import ICLPrompt, PromptTemplate, get_template
from tvlens.tasks.recast import multiple_choice
from tvlens.tasks.registry import FV_DATA_DIR

# The function-vector datasets (Todd et al. 2023, shipped with tvlens): ``fv/<task>`` resolves
# to ``<data_dir>/abstractive/<task>.json`` or ``<data_dir>/extractive/<task>.json``.
FV_ALIAS = "fv"
# ``mc/<task>``: the function-vector task recast as 4-option multiple choice with letter
# answers (tvlens.tasks.recast), named ``mc_<task>``: the answer format of ATV's unseen tasks.
MC_ALIAS = "mc"
MC_OPTIONS = 4


def resolve_task(ref: str, cfg: Any, cache: dict[str, TaskSuite]) -> Task:
    """The task an ``alias/task`` reference names (see :class:`CompareConfig`);
    ``alias/task=new_name`` renames it."""
    ref, _, rename = ref.partition("=")
    task = _resolve(ref, cfg, cache)
    return Task(rename, task.examples, family=task.family) if rename else task


def _resolve(ref: str, cfg: Any, cache: dict[str, TaskSuite]) -> Task:
    alias, sep, name = ref.partition("/")
    if not sep or not name:
        raise UnknownTaskError(
            f"Task reference {ref!r} is not 'alias/task' (e.g. 'fv/antonym', 'words/antonyms')."
        )
    if alias == MC_ALIAS:  # distinct short source inputs, then the options added
        source = _usable(_resolve(f"{FV_ALIAS}/{name}", cfg, cache), cfg.max_input_chars)
        return multiple_choice(source, MC_OPTIONS, seed=cfg.data_seed)
    if alias == FV_ALIAS:
        root = Path(cfg.data_dir) if cfg.data_dir is not None else FV_DATA_DIR
        for sub in ("abstractive", "extractive", "."):
            path = root / sub / f"{name}.json"
            if path.is_file():
                return Task.from_json(path, name=name)
        raise UnknownTaskError(f"No {name}.json under {str(root)!r} (abstractive/ or extractive/).")
    if alias not in cache:
        cache[alias] = get_atv_suite(cfg.suites.get(alias, {"name": alias}))
    return cache[alias][name]


def _usable(task: Task, max_chars: int) -> Task:
    """Distinct short inputs only (first occurrence kept; a recast task's options are not
    counted in its length)."""
    seen: dict[str, Any] = {}
    for ex in task.examples:
        if len(ex.input.split("\n")[0]) <= max_chars and ex.input not in seen:
            seen[ex.input] = ex
    return Task(task.name, tuple(seen.values()), family=task.family)


# How two tasks' inputs are compared: as exact strings; after lowercasing and collapsing
# whitespace (capitalize_first_letter's "whose" is lowercase_first_letter's "WHOSE"); and word
# by word (choose_first_of_3's "play, gray, zap" and choose_middle_of_3's lists draw on the
# same words). An unseen task whose inputs the in-domain tasks already hold under any of these
# can only be told apart by its instruction (DESIGN.md §7).
OVERLAP_MODES = ("exact", "lower", "words")
_WORD = re.compile(r"\w+")


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def input_overlap(a: Task, b: Task, mode: str = "exact") -> float:
    """The share of ``a``'s inputs that are also inputs of ``b``: ``"exact"`` strings;
    ``"lower"``: equal after lowercasing and collapsing whitespace; ``"words"``: every word of
    the input (lowercased, ``\\w+``) is a word of some input of ``b`` (the same vocabulary,
    in any order or combination)."""
    if mode == "exact":
        ins = {e.input for e in a.examples}
        return len(ins & {e.input for e in b.examples}) / max(len(ins), 1)
    if mode == "lower":
        ins = {" ".join(e.input.lower().split()) for e in a.examples}
        return len(ins & {" ".join(e.input.lower().split()) for e in b.examples}) / max(len(ins), 1)
    if mode == "words":
        vocab = frozenset().union(*(_words(e.input) for e in b.examples))
        ins = {_words(e.input) for e in a.examples} - {frozenset()}
        return sum(w <= vocab for w in ins) / max(len(ins), 1)
    raise TVLensError(f"Overlap mode must be one of {OVERLAP_MODES}, got {mode!r}.")


def overlaps(tasks: dict[str, Task], against: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Per mode (:data:`OVERLAP_MODES`), per task, per task of ``against`` (not itself): the
    share of the task's inputs that are inputs of the other (:func:`input_overlap`)."""
    out = {
        m: {t: {d: round(input_overlap(tasks[t], tasks[d], m), 4) for d in against if d != t}
            for t in tasks}
        for m in ("exact", "lower")
    }  # fmt: skip
    # "words" as input_overlap computes it, each task's word sets and vocabulary made once
    # (thousands of inputs per file: commonsense_qa, ag_news)
    sets = {t: {_words(e.input) for e in task.examples} - {frozenset()} for t, task in
            tasks.items()}  # fmt: skip
    vocab = {d: frozenset().union(*sets[d]) for d in against}
    out["words"] = {
        t: {d: round(sum(w <= vocab[d] for w in sets[t]) / max(len(sets[t]), 1), 4)
            for d in against if d != t}
        for t in tasks
    }  # fmt: skip
    return out


@dataclass(frozen=True)
class CompareData:
    """The in-domain and unseen tasks, each split into disjoint train / dev / test queries
    (the same split for every method and seed), with each task's templates: the training
    instructions (one drawn per query: by a hash of the query for dev and test, per epoch in
    training) and a held-out instruction used only at test."""

    in_domain: ATVSplits
    unseen: ATVSplits
    sources: dict[str, str]
    templates: dict[str, list[PromptTemplate]]
    heldout_templates: dict[str, PromptTemplate]
    categories: dict[str, str]
    overlap: dict[str, dict[str, float]]  # task -> in-domain task -> share of its inputs
    instructed: bool = True
    # The same per overlap mode ("exact", "lower", "words"; see input_overlap).
    overlap_modes: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # Per in-domain task, every query outside its dev and test queries: what a seed's own
    # training queries are drawn from (seeded_train).
    train_pool: dict[str, list[ICLPrompt]] = field(default_factory=dict)
    data_seed: int = 0

    def seeded_train(self, seed: int) -> ATVSplits:
        """The in-domain splits with seed ``seed``'s own training queries: seed 0 the split's,
        seed s as many drawn (seeded by the data seed, the seed and the task) from the task's
        pool (dev and test unchanged, so every seed is scored on the same queries)."""
        s = self.in_domain
        if seed == 0 or not self.train_pool:
            return s
        train = []
        for ti, task in enumerate(s.tasks):
            n = sum(p.task == task for p in s.train)
            pool = self.train_pool[task]
            pick = np.random.default_rng([self.data_seed, seed, ti]).choice(
                len(pool), size=min(n, len(pool)), replace=False
            )
            train += [pool[i] for i in sorted(pick)]
        return ATVSplits(train, s.dev, s.test, s.tasks)

    def groups(self) -> dict[str, ATVSplits]:
        return {"in_domain": self.in_domain, "unseen": self.unseen}

    def heldout(self, prompts: list[ICLPrompt]) -> list[ICLPrompt]:
        """The same queries in their task's held-out template."""
        return [replace(p, template=self.heldout_templates[p.task]) for p in prompts]

    def bare(self) -> CompareData:
        """The same queries without instructions (the "no instruction" ablation)."""
        if not self.instructed:
            return self

        def strip(ps: list[ICLPrompt]) -> list[ICLPrompt]:
            return [replace(p, template=p.template.bare()) for p in ps]

        def strip_splits(s: ATVSplits) -> ATVSplits:
            return ATVSplits(strip(s.train), strip(s.dev), strip(s.test), s.tasks)

        bare_t = {t: [ts[0].bare()] for t, ts in self.templates.items()}
        return replace(
            self, in_domain=strip_splits(self.in_domain), unseen=strip_splits(self.unseen),
            templates=bare_t, heldout_templates={t: ts[0] for t, ts in bare_t.items()},
            instructed=False, train_pool={t: strip(ps) for t, ps in self.train_pool.items()},
        )  # fmt: skip

    def train_template(self, prompt: ICLPrompt, seed: int, epoch: int) -> ICLPrompt:
        """``prompt`` in one of its task's training templates, drawn for (seed, epoch)."""
        ts = self.templates[prompt.task]
        i = hash_text(f"{seed}|{epoch}|{prompt.task}|{prompt.query.input}") % len(ts)
        return replace(prompt, template=ts[i])

    def describe(self) -> dict[str, Any]:
        return {
            "in_domain": self.in_domain.tasks,
            "unseen": self.unseen.tasks,
            "sources": self.sources,
            "categories": self.categories,
            "instructed": self.instructed,
            "instructions": {
                t: {
                    "train": [x.instruction for x in ts],
                    "heldout": self.heldout_templates[t].instruction,
                }
                for t, ts in self.templates.items()
            },  # fmt: skip
            "input_overlap": self.overlap,
            "input_overlap_lower": self.overlap_modes.get("lower", {}),
            "input_overlap_words": self.overlap_modes.get("words", {}),
            "queries_per_task": {
                g: {k: v // max(len(s.tasks), 1) for k, v in s.counts().items()}
                for g, s in self.groups().items()
            },
            "note": "unseen tasks: never seen by any trained method; their train queries serve "
            "only as demonstrations for ICL, task vectors and function vectors. input_overlap: "
            "share of each task's inputs that are inputs of an in-domain task (whole files); "
            "_lower: after lowercasing; _words: every word of the input is a word of the other "
            "task's inputs.",
        }


def _templated(splits: ATVSplits, data_templates: dict[str, list[PromptTemplate]]) -> ATVSplits:
    """Every prompt in a training template drawn by a hash of its query (dev and test: fixed;
    training redraws per epoch)."""

    def pick(ps: list[ICLPrompt]) -> list[ICLPrompt]:
        out = []
        for p in ps:
            ts = data_templates[p.task]
            out.append(replace(p, template=ts[hash_text(f"{p.task}|{p.query.input}") % len(ts)]))
        return out

    return ATVSplits(pick(splits.train), pick(splits.dev), pick(splits.test), splits.tasks)


def load_compare_data(cfg: Any, template: str) -> CompareData:
    """The tasks, their splits, templates and categories, and the unseen split's check: no
    unseen task may share more than ``max_unseen_overlap`` of its inputs with an in-domain
    task unless ``overlap_allowed`` says why."""
    cache: dict[str, TaskSuite] = {}
    out, sources, full = {}, {}, {}
    instr = load_instructions(cfg.instructions) if cfg.instructions is not None else None
    base = get_template(template)
    templates, heldout, categories = {}, {}, {}
    for group, refs in (("in_domain", cfg.in_domain), ("unseen", cfg.unseen)):
        tasks = []
        for ref in refs:
            t = _usable(resolve_task(ref, cfg, cache), cfg.max_input_chars)
            if t.name in sources:  # e.g. "first" of two list suites: name it by its alias
                t = Task(ref.replace("/", "_").split("=")[0], t.examples, family=t.family)
            if t.name in sources:
                raise TVLensError(f"Task {ref!r} is listed twice.")
            sources[t.name], full[t.name] = ref, t
            if instr is None:
                templates[t.name], heldout[t.name] = [base], base
                categories[t.name] = t.family or "all"
            elif t.name not in instr:
                raise TVLensError(
                    f"Task {t.name!r} has no instructions in {cfg.instructions!r}: add "
                    "{category, train, heldout} for it, or run with instructions=None."
                )
            else:
                templates[t.name] = instr[t.name].templates(base)
                heldout[t.name] = instr[t.name].heldout_template(base)
                categories[t.name] = instr[t.name].category
            tasks.append(t)
        suite = TaskSuite(group, tuple(tasks))
        out[group] = _templated(
            split_queries(suite, cfg.n_train, cfg.n_dev, cfg.n_test, base, cfg.data_seed),
            templates,
        )
    ind = out["in_domain"].tasks
    modes = overlaps(full, ind)
    overlap = modes["exact"]
    for u in out["unseen"].tasks:
        for d, share in overlap[u].items():
            if share > cfg.max_unseen_overlap and f"{u}|{d}" not in cfg.overlap_allowed:
                raise TVLensError(
                    f"Unseen task {u!r} shares {share:.0%} of its inputs with in-domain task "
                    f"{d!r} (more than max_unseen_overlap={cfg.max_unseen_overlap}): pick another "
                    f"unseen task, or state why in overlap_allowed['{u}|{d}']."
                )
    pool = _train_pool(out["in_domain"], full, base, templates) if cfg.seed_train_queries else {}
    return CompareData(out["in_domain"], out["unseen"], sources, templates, heldout, categories,
                       overlap, instructed=instr is not None, overlap_modes=modes,
                       train_pool=pool, data_seed=cfg.data_seed)  # fmt: skip


def _train_pool(
    splits: ATVSplits, full: dict[str, Task], base: PromptTemplate,
    templates: dict[str, list[PromptTemplate]],
) -> dict[str, list[ICLPrompt]]:  # fmt: skip
    """Per task, its queries that are neither dev nor test queries (inputs never shared)."""
    held = {(p.task, p.query.input) for p in splits.dev + splits.test}
    out = {}
    for task in splits.tasks:
        ps = [ICLPrompt(task, (), ex, base) for ex in full[task].examples
              if (task, ex.input) not in held]  # fmt: skip
        out[task] = _templated(ATVSplits(ps, [], [], [task]), templates).train
    return out


def merged(a: ATVSplits, b: ATVSplits) -> ATVSplits:
    return ATVSplits(a.train + b.train, a.dev + b.dev, a.test + b.test, a.tasks + b.tasks)
