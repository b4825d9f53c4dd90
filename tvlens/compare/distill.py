"""The equal-rank claim as a distillation test of expressivity: can a rank-r ATV (frozen
generator, rank-r expansion) express what a rank-r LoRA on the same sites learned, and the
reverse?

Per rank and seed, a ``lora_r{r}`` and an ``atv_r{r}`` teacher are trained on the gold answers
of the in-domain training queries (as in the comparison, dev-chosen variants when the
comparison in ``out`` has swept them). Then, per direction, a freshly initialised student
(seed: the teacher's + :data:`STUDENT_SEED`) minimises KL(teacher || student) over every
answer token (teacher-forced with the gold answer) on the teacher's training queries, until
that KL stops falling (:func:`kl_stopped`; the lowest-KL epoch's weights kept). Four
directions: ``lora->atv`` and ``atv->lora`` (across families) and ``lora->lora`` and
``atv->atv``: the same-family controls, the floor that optimisation reaches when the student
can certainly express its teacher. A cross-family KL close to the same-family floor of the
same teacher reads as "expressible"; well above it, as "not expressed at this rank".

Reported per direction, on the training queries (what the student was fitted on) and on the
held-out test queries (in-domain and unseen): the mean KL per answer token and the top-1
agreement (the share of answer tokens where the student's argmax is the teacher's), before
and after distillation, with the teacher's KL to the untouched target as the scale; and each
teacher's test accuracy. Each (rank, seed) is one JSON cell in ``out/distill/`` (a stopped run
resumes by cells); ``out/distill.json`` and ``out/distill.md`` hold the seed-level summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tvlens.compare.config import DEFAULT_PRESET, CompareConfig, get_compare_preset
from tvlens.compare.fitting import FitCriterion, engine_fit, hf_logits
from tvlens.compare.registry import rank_pair
from tvlens.compare.run import build_method
from tvlens.compare.setup import CompareContext, compare_context, selection
from tvlens.errors import TVLensError
from tvlens.models.loading import TVModel, as_model
from tvlens.results import Result
from tvlens.runs.checkpoints import write_json_atomically
from tvlens.runs.portable import portable
from tvlens.tasks.prompts import ICLPrompt

# Teacher family -> student family; the last two are the same-family controls (the floor).
DIRECTIONS = (("lora", "atv"), ("atv", "lora"), ("lora", "lora"), ("atv", "atv"))
# Where each direction is measured: the training queries the student was fitted on, and the
# held-out test queries of each group.
SETS = ("train", "in_domain", "unseen")
STUDENT_SEED = 1000  # a student's seed: its teacher's + this (never a teacher's own seed)
REL_TOL = 0.01  # the KL must fall by more than this share to count as falling
DISTILL_DIR = "distill"  # out/distill/r{rank}_seed{seed}.json: one cell each
EVAL_BATCH = 32


def answer_positions(labels: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos"]:
    """The positions whose next token is a gold answer token (teacher forcing): the query
    position and every answer token but the last (``labels``: -100 off the answer)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    return mask


def model_logits(model: Any, batch: Any, module: Any = None) -> Float[Tensor, "batch pos vocab"]:
    """Logits on an ATV batch of a compare method (ATV or peft; ``module``: the trainable
    module being trained, else the method's own) or of the untouched target (a TVModel)."""
    if isinstance(model, TVModel):
        return model(batch.tokens, attention_mask=batch.attention_mask)
    if getattr(model, "atv", None) is not None:
        return model.atv.logits(batch, generator=module)
    return hf_logits(module or model.model, batch.tokens, batch.attention_mask)


def answer_log_probs(model: Any, batch: Any, module: Any = None) -> Float[Tensor, "tokens vocab"]:
    """Next-token log-probabilities at every answer position of the batch
    (:func:`answer_positions`), row by row: one row per answer token."""
    logits = model_logits(model, batch, module)
    return F.log_softmax(logits[answer_positions(batch.labels)].float(), dim=-1)


def kl(teacher: Float[Tensor, "n vocab"], student: Float[Tensor, "n vocab"]) -> Float[Tensor, " n"]:
    """KL(teacher || student) per row, from log-probabilities."""
    return (teacher.exp() * (teacher - student)).sum(-1)


@torch.no_grad()
def distill_metrics(
    teacher: Any, student: Any, prompts: Sequence[ICLPrompt], batch_of: Callable[[list], Any]
) -> dict[str, float]:
    """Over every answer token of ``prompts`` (teacher-forced with the gold answer): the mean
    KL(teacher || student) per token and the top-1 agreement (share of tokens where both
    argmaxes agree); ``_first``: the same at the first answer token only (what the comparison
    scores). ``student``: a compare method, or the untouched target (a TVModel)."""
    kls, agree, first = [], [], []
    device = torch.device(teacher.ctx.device)
    for start in range(0, len(prompts), EVAL_BATCH):
        b = batch_of(list(prompts[start : start + EVAL_BATCH])).to(device)
        t, s = answer_log_probs(teacher, b), answer_log_probs(student, b)
        kls.append(kl(t, s).cpu())
        agree.append((t.argmax(-1) == s.argmax(-1)).float().cpu())
        # the first answer token of each row: its position is the query's
        pos = torch.arange(b.tokens.shape[1], device=device).expand_as(b.labels)
        first.append((pos == b.query_pos[:, None])[answer_positions(b.labels)].cpu())
    k, a, f = torch.cat(kls), torch.cat(agree), torch.cat(first)
    return {"kl": float(k.mean()), "agreement": float(a.mean()), "kl_first": float(k[f].mean()),
            "agreement_first": float(a[f].mean()), "tokens": int(k.numel())}  # fmt: skip


# ---------------------------------------------------------------------------- stopping rule


def last_fall(kls: Sequence[float], rel_tol: float = REL_TOL) -> int:
    """The index of the last epoch whose KL fell more than ``rel_tol`` (a share) below the KL
    of the previous such epoch (the first epoch counts as one)."""
    at = 0
    for i, v in enumerate(kls):
        if v < kls[at] * (1 - rel_tol):
            at = i
    return at


def kl_stopped(kls: Sequence[float], patience: int, rel_tol: float = REL_TOL) -> bool:
    """The students' stopping rule: ``patience`` epochs since the KL last fell (by more than
    ``rel_tol``: :func:`last_fall`)."""
    return len(kls) - (last_fall(kls, rel_tol) + 1) >= patience


def stopping_rule(patience: int, rel_tol: float, epochs: int) -> str:
    """The rule in words, as the outputs state it."""
    return (f"each student minimises KL(teacher || student) over every answer token of the "
            f"in-domain training queries (teacher-forced with the gold answer); after every "
            f"epoch the mean KL on those queries is measured; training stops when it has not "
            f"fallen by more than {rel_tol:.0%} for {patience} epoch(s), or after {epochs} "
            f"epochs; the lowest-KL epoch's weights are kept.")  # fmt: skip


def kl_criterion(
    teacher: Any, student: Any, prompts: Sequence[ICLPrompt], batch_of: Any, patience: int,
    rel_tol: float,
) -> FitCriterion:  # fmt: skip
    """:func:`tvlens.compare.fitting.engine_fit`'s criterion for a student: the KL to its
    teacher on ``prompts`` after each epoch (``train_kl``), :func:`kl_stopped`, lowest kept."""
    return FitCriterion(
        evaluate=lambda: {"train_kl": distill_metrics(teacher, student, prompts, batch_of)["kl"]},
        best=lambda es: int(np.argmin([e["train_kl"] for e in es])),
        stop=lambda es: kl_stopped([e["train_kl"] for e in es], patience, rel_tol),
        keys=("train_kl",),
        postfix=lambda e: {"kl": f"{e['train_kl']:.4f}"},
    )


# ---------------------------------------------------------------------------- results


def _sets(direction: dict[str, Any]) -> dict[str, Any]:
    # "groups": results saved before issue 32 (held-out queries only)
    return direction.get("sets", direction.get("groups", {}))


@dataclass
class DistillResult(Result):
    """One (rank, seed) cell: per direction (``"lora->atv"``: an ATV student of the LoRA
    teacher; ``"lora->lora"``: the same-family control), per set of queries (``train``,
    ``in_domain``, ``unseen``: :data:`SETS`), the student's KL per answer token and top-1
    agreement after distillation and ``_before``, and the teacher's KL to the target
    (``teacher_to_target``); ``teachers``: each teacher's test accuracy."""

    rank: int
    seed: int
    directions: dict[str, dict[str, Any]] = field(default_factory=dict)
    teachers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "seed": self.seed, "directions": self.directions,
                "teachers": self.teachers}  # fmt: skip

    def to_dataframe(self):
        return pd.DataFrame([{"rank": self.rank, "seed": self.seed, "direction": d, "set": g,
                              **{k: x for k, x in v.items() if not isinstance(x, dict)}}
                             for d, r in self.directions.items()
                             for g, v in _sets(r).items()])  # fmt: skip

    def plot(self, **kwargs: Any):
        import plotly.graph_objects as go

        df = self.to_dataframe()
        fig = go.Figure()
        for col in ("teacher_to_target", "kl_before", "kl"):
            fig.add_bar(x=df["direction"] + " " + df["set"], y=df[col], name=col)
        fig.update_layout(barmode="group", yaxis_title="mean KL per answer token (nats)",
                          title=f"Distillation at rank {self.rank}, seed {self.seed}",
                          **kwargs)  # fmt: skip
        return fig


@dataclass
class DistillReport(Result):
    """What :func:`run_distill` returns (``out/distill.json``): the cells it read (one per
    rank and seed), ``summary``: per rank, direction and set the mean and seed range of each
    measure, ``teachers``: the same for the teachers' accuracy, ``stopping``: the students'
    rule, ``table``: ``out/distill.md``."""

    ranks: list[int]
    seeds: list[int]
    cells: list[DistillResult]
    summary: list[dict[str, Any]]
    teachers: list[dict[str, Any]]
    stopping: str
    table: str
    ran: list[str] = field(default_factory=list)  # the cells computed by this call
    missing: list[str] = field(default_factory=list)  # cells not computed yet (stop_after)

    def __str__(self) -> str:
        return self.table

    def to_dict(self) -> dict[str, Any]:
        return {"ranks": self.ranks, "seeds": self.seeds, "stopping": self.stopping,
                "summary": self.summary, "teachers": self.teachers, "ran": self.ran,
                "missing": self.missing}  # fmt: skip

    def to_dataframe(self):
        return pd.DataFrame(self.summary)

    def plot(self, **kwargs: Any):
        import plotly.graph_objects as go

        df = self.to_dataframe()
        fig = go.Figure()
        for s in SETS:
            d = df[df["set"] == s]
            fig.add_bar(x="r" + d["rank"].astype(str) + " " + d["direction"], y=d["kl"],
                        name=s, error_y={"type": "data", "array": d["kl_max"] - d["kl"],
                                         "arrayminus": d["kl"] - d["kl_min"]})  # fmt: skip
        fig.update_layout(barmode="group", yaxis_title="mean KL per answer token (nats)",
                          title="Distillation: KL to the teacher (bars: seed range)",
                          **kwargs)  # fmt: skip
        return fig


# ---------------------------------------------------------------------------- one cell


def _variant(ctx: CompareContext, method: str) -> dict:
    sel = selection(ctx.cfg, ctx.out, method)
    return sel["variant"] if sel else {}


def _accuracy(method: Any, ctx: CompareContext) -> dict[str, dict[str, float]]:
    """First-token and exact-match accuracy on each group's test queries."""
    out = {}
    for g, s in ctx.data.groups().items():
        first, exact = method.correctness(s.test)
        out[g] = {"first_token": float(np.mean(first)), "exact_match": float(np.mean(exact))}
    return out


# A finished teacher's or student's record in its run folder: a killed cell resumes from its
# finished runs instead of training them again (the cell's JSON is written at its end).
DONE_FILE = "distill_done.json"
TEACHER_WEIGHTS = "teacher.safetensors"


def _key(cfg: CompareConfig, **what: Any) -> dict[str, Any]:
    """What a run's or cell's result depends on, as JSON with portable paths: the comparison's
    fingerprint and ``what``."""
    return json.loads(json.dumps(portable({"config": cfg.fingerprint(), **what})))


def _finished(run_dir: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The result recorded in ``run_dir`` by a run with this ``key``, else None."""
    path = run_dir / DONE_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return saved["result"] if saved.get("key") == key else None


def train_teachers(
    ctx: CompareContext, rank: int, seed: int
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The ``lora`` and ``atv`` teachers of ``rank``, trained on the gold answers of the
    in-domain training queries (in ``ctx.out/runs/distill_r{rank}_teacher_*``; a teacher
    finished there with the same settings is loaded, not trained again), and what their
    training reported (``key``: the settings, which the students' records name)."""
    lora, atv = rank_pair(rank)
    teachers, infos = {}, {}
    for fam, name in (("lora", lora), ("atv", atv)):
        m = build_method(ctx, name, seed, _variant(ctx, name))
        m.run_dir = ctx.out / "runs" / f"distill_r{rank}_teacher_{fam}__seed{seed}"
        key = _key(ctx.cfg, method=name, seed=seed, variant=m.variant)
        done = _finished(m.run_dir, key)
        if done is not None and (m.run_dir / TEACHER_WEIGHTS).is_file():
            m.restore(m.run_dir / TEACHER_WEIGHTS)
            info = done
        else:
            info = m.fit(ctx.data.in_domain) or {}
            m.save_best(m.run_dir / TEACHER_WEIGHTS)
            write_json_atomically(m.run_dir / DONE_FILE, {"key": key, "result": info})
        (m.model if fam == "lora" else m.atv.generator).eval()
        teachers[fam], infos[fam] = m, {**info, "key": key}
    return teachers, infos


def _prompts(ctx: CompareContext) -> dict[str, list[ICLPrompt]]:
    """The queries of each of :data:`SETS`."""
    return {"train": ctx.data.in_domain.train,
            **{g: s.test for g, s in ctx.data.groups().items()}}  # fmt: skip


def fresh_student(ctx: CompareContext, name: str, seed: int) -> tuple[Any, Any, dict]:
    """A freshly initialised ``name`` (a compare method) with its trainable module and the
    extra arguments :func:`~tvlens.compare.fitting.engine_fit` trains it with."""
    student = build_method(ctx, name, seed, _variant(ctx, name))
    if getattr(student, "kind", None) == "rank":  # the ATV family
        student.atv = student.build()
        return student, student.atv.generator, {"param_groups": student.param_groups}
    student.model = student.build()
    return student, student.model, {}


def measure(teacher: Any, student: Any, ctx: CompareContext, batch_of: Any) -> dict[str, Any]:
    """:func:`distill_metrics` on each of :data:`SETS`."""
    prompts = _prompts(ctx)
    return {s: distill_metrics(teacher, student, prompts[s], batch_of) for s in SETS}


def distill_direction(
    ctx: CompareContext, teacher: Any, student_name: str, seed: int, run_dir: Path,
    batch_of: Any, rel_tol: float, key: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A fresh ``student_name`` (seed ``seed``) distilled from ``teacher`` on the in-domain
    training queries until the KL stops falling (:func:`kl_criterion`), measured before and
    after on :data:`SETS`. With ``key`` (the settings and the teacher's), a student finished
    in ``run_dir`` with the same key is read back, not trained again."""
    if key is not None and (done := _finished(run_dir, key)) is not None:
        return done
    student, module, extra = fresh_student(ctx, student_name, seed)
    student.run_dir = run_dir
    before = measure(teacher, student, ctx, batch_of)

    def loss(m: Any, b: Any) -> Tensor:
        with torch.no_grad():
            t = answer_log_probs(teacher, b)
        return kl(t, answer_log_probs(student, b, module=m)).mean()

    crit = kl_criterion(teacher, student, ctx.data.in_domain.train, batch_of, ctx.cfg.patience,
                        rel_tol)  # fmt: skip
    lr = student.variant.get("lr", student.options.lrs[0])
    info = engine_fit(student, module, loss, ctx.data.in_domain, collate=batch_of, lr=lr,
                      weight_decay=0.0, criterion=crit, **extra)  # fmt: skip
    module.eval()
    after = measure(teacher, student, ctx, batch_of)
    sets = {s: {**after[s], **{f"{k}_before": v for k, v in before[s].items() if k != "tokens"}}
            for s in SETS}  # fmt: skip
    res = {"student": student_name, "student_seed": seed, "lr": lr, "sets": sets,
           "curve": info["curve"], "epochs_run": info["epochs_run"],
           "best_epoch": info["best_epoch"], "stopped_early": info["stopped_early"],
           "still_falling": info["still_rising"]}  # fmt: skip
    if key is not None:
        write_json_atomically(run_dir / DONE_FILE, {"key": key, "result": res})
    return res


def distill_pair(
    ctx: CompareContext, rank: int, seed: int = 0, rel_tol: float = REL_TOL,
    student_epochs: int | None = None,
) -> DistillResult:  # fmt: skip
    """One cell: the ``lora_r{rank}`` and ``atv_r{rank}`` teachers of ``seed``, then the four
    :data:`DIRECTIONS` (students of seed ``seed + STUDENT_SEED``, at most ``student_epochs``
    epochs, default the comparison's); runs in ``ctx.out/runs/distill_r{rank}_*``."""
    names = dict(zip(("lora", "atv"), rank_pair(rank), strict=True))
    teachers, infos = train_teachers(ctx, rank, seed)
    batch_of = teachers["atv"].atv.batch  # the target's tokens (and the generator's)
    out = DistillResult(rank, seed)
    scale, prompts = {}, _prompts(ctx)
    for fam, t in teachers.items():
        scale[fam] = {s: distill_metrics(t, ctx.target, prompts[s], batch_of)["kl"] for s in SETS}
        out.teachers[fam] = {"method": names[fam], "variant": t.variant,
                             "accuracy": _accuracy(t, ctx),
                             "best_dev_acc": infos[fam].get("best_dev_acc"),
                             "epochs_run": infos[fam].get("epochs_run")}  # fmt: skip
    sctx = ctx if student_epochs is None else replace(
        ctx, cfg=ctx.cfg.with_overrides(epochs=student_epochs))  # fmt: skip
    for t_fam, s_fam in DIRECTIONS:
        run_dir = ctx.out / "runs" / f"distill_r{rank}_{t_fam}_to_{s_fam}__seed{seed}"
        key = _key(sctx.cfg, teacher=infos[t_fam]["key"], student=names[s_fam],
                   seed=seed + STUDENT_SEED, rel_tol=rel_tol)  # fmt: skip
        d = distill_direction(sctx, teachers[t_fam], names[s_fam], seed + STUDENT_SEED, run_dir,
                              batch_of, rel_tol, key)  # fmt: skip
        for s in SETS:
            d["sets"][s]["teacher_to_target"] = scale[t_fam][s]
        out.directions[f"{t_fam}->{s_fam}"] = d
    return out


# ---------------------------------------------------------------------------- summary

MEASURES = ("kl", "agreement", "kl_before", "agreement_before", "kl_first", "agreement_first",
            "teacher_to_target")  # fmt: skip


def _spread(values: Sequence[float], name: str) -> dict[str, float]:
    """Mean, seed range and standard deviation (ddof 1; 0 for one seed) of ``values``."""
    v = np.asarray(values, dtype=float)
    return {name: float(v.mean()), f"{name}_min": float(v.min()), f"{name}_max": float(v.max()),
            f"{name}_sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}  # fmt: skip


def summarize(cells: Sequence[DistillResult]) -> tuple[list[dict], list[dict]]:
    """Per rank, direction and set: each of :data:`MEASURES` over the seeds
    (:func:`_spread`); per rank, teacher family and group: the teachers' test accuracy."""
    rows, teachers = [], []
    for rank in sorted({c.rank for c in cells}):
        mine = [c for c in cells if c.rank == rank]
        for t_fam, s_fam in DIRECTIONS:
            ds = [c.directions[f"{t_fam}->{s_fam}"] for c in mine]
            for s in SETS:
                row: dict[str, Any] = {"rank": rank, "direction": f"{t_fam}->{s_fam}", "set": s,
                                       "seeds": len(ds)}  # fmt: skip
                for m in MEASURES:
                    row.update(_spread([d["sets"][s][m] for d in ds], m))
                row["epochs_run"] = float(np.mean([d["epochs_run"] for d in ds]))
                row["still_falling"] = sum(bool(d["still_falling"]) for d in ds)
                rows.append(row)
        for fam in ("lora", "atv"):
            for g in ("in_domain", "unseen"):
                accs = [c.teachers[fam]["accuracy"][g] for c in mine]
                teachers.append(
                    {
                        "rank": rank,
                        "teacher": mine[0].teachers[fam]["method"],
                        "group": g,
                        "seeds": len(accs),
                        **_spread([a["first_token"] for a in accs], "first_token"),
                        **_spread([a["exact_match"] for a in accs], "exact_match"),
                    }
                )
    return rows, teachers


def reading(cells: Sequence[DistillResult], rank: int, teacher: str) -> str:
    """The verdict for one teacher family at ``rank``, on the training queries: the other
    family's student against the same-family floor (the same teacher, so one KL scale).
    Close: some seed's cross-family KL is within the floor's seed range or below it. Said with
    it: the teacher's KL to the target (near 0: the teacher barely moved and the test says
    little) and the students still falling at their epoch limit (the KL is then the budget's,
    not the family's)."""
    other = "atv" if teacher == "lora" else "lora"
    mine = [c for c in cells if c.rank == rank]
    ds = {k: [c.directions[f"{teacher}->{k}"] for c in mine] for k in (other, teacher)}
    cross, floor = ([d["sets"]["train"]["kl"] for d in ds[k]] for k in (other, teacher))
    scale = np.mean([d["sets"]["train"]["teacher_to_target"] for d in ds[teacher]])
    falling = sum(bool(d["still_falling"]) for k in ds for d in ds[k])
    names = {"lora": "LoRA", "atv": "ATV"}
    say = (f"rank {rank}, {names[teacher]} teacher (KL to the target {scale:.3g}): "
           f"{names[other]} student KL {np.mean(cross):.3g} vs the {names[teacher]}-student "
           f"floor {np.mean(floor):.3g} (train queries, {len(mine)} seed(s); {falling} of "
           f"{2 * len(mine)} students still falling at the epoch limit)")  # fmt: skip
    if min(cross) <= max(floor):
        return f"{say}: close to the floor, expressible at this rank."
    ratio = np.mean(cross) / max(np.mean(floor), 1e-12)
    if any(d["still_falling"] for d in ds[other]):  # the budget ended them, not the family
        return (f"{say}: above the floor in every seed ({ratio:.3g}x), but the "
                f"{names[other]} students were still falling: not expressed within this "
                "budget (an upper bound), not shown inexpressible.")  # fmt: skip
    return f"{say}: above the floor in every seed ({ratio:.3g}x), not expressed at this rank."


def _fmt(row: dict[str, Any], m: str) -> str:
    return f"{row[m]:.3g} ({row[m + '_min']:.3g}–{row[m + '_max']:.3g})"


def distill_table(report: DistillReport) -> str:
    """``out/distill.md``: the students' KL and agreement per rank and direction (mean over
    seeds, seed range in brackets), the teachers' accuracy, the rule and the readings."""
    lines = ["# Distillation: can each family express the other's teacher?", "",
             f"Stopping rule: {report.stopping}", "",
             "KL(teacher || student) per answer token (nats) and top-1 agreement, mean over "
             "seeds (min–max). train: the in-domain training queries the student was fitted "
             "on; in_domain / unseen: held-out test queries. Same-family rows (lora->lora, "
             "atv->atv) are the floor for the same teacher.", "",
             "| rank | direction | set | KL | KL before | agreement | agreement before "
             "| teacher→target KL | epochs (still falling) |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report.summary:
        lines.append(f"| {r['rank']} | {r['direction']} | {r['set']} | {_fmt(r, 'kl')} "
                     f"| {_fmt(r, 'kl_before')} | {_fmt(r, 'agreement')} "
                     f"| {_fmt(r, 'agreement_before')} | {_fmt(r, 'teacher_to_target')} "
                     f"| {r['epochs_run']:.3g} ({r['still_falling']}) |")  # fmt: skip
    lines += [
        "",
        "Teachers' test accuracy, mean over seeds (min–max):",
        "",
        "| rank | teacher | group | first token | exact match |",
        "|---|---|---|---|---|",
    ]
    for t in report.teachers:
        lines.append(f"| {t['rank']} | {t['teacher']} | {t['group']} "
                     f"| {_fmt(t, 'first_token')} | {_fmt(t, 'exact_match')} |")  # fmt: skip
    lines += ["", "Reading (cross-family KL against the same teacher's same-family floor):", ""]
    done = {c.rank for c in report.cells}
    lines += [f"- {reading(report.cells, r, t)}" for r in report.ranks if r in done
              for t in ("lora", "atv")]  # fmt: skip
    if report.missing:
        lines += ["", f"Not computed yet (resume with the same command): "
                  f"{', '.join(report.missing)}."]  # fmt: skip
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- the runner


def cell_file(out: Path, rank: int, seed: int) -> Path:
    """The (rank, seed) cell's JSON: ``out/distill/r{rank}_seed{seed}.json``."""
    return out / DISTILL_DIR / f"r{rank}_seed{seed}.json"


def _checked(
    ranks: Sequence[int], seeds: int, rank: int | None, rel_tol: float,
    student_epochs: int | None,
) -> list[int]:  # fmt: skip
    """The ranks to run, once each; every bad argument refused in one line."""
    if rank is not None:
        if list(ranks) not in ([1, 8], [rank]):
            raise TVLensError(f"Give one rank (rank={rank}) or ranks={list(ranks)}, not both.")
        ranks = [rank]
    ranks = list(dict.fromkeys(ranks))
    if not ranks:
        raise TVLensError("No rank to distill: give ranks, e.g. --ranks 1,8.")
    for r in ranks:
        rank_pair(r)  # a bad rank is refused here, before the model loads
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise TVLensError(f"seeds is the number of seeds (0, 1, ...), at least 1; got {seeds!r}.")
    if not 0 <= rel_tol < 1:
        raise TVLensError(f"rel_tol is a share of the KL in [0, 1), e.g. 0.01; got {rel_tol!r}.")
    if student_epochs is not None and student_epochs < 1:
        raise TVLensError(f"student_epochs must be at least 1 (or None); got {student_epochs!r}.")
    return ranks


def _reuse(path: Path, settings: dict[str, Any]) -> DistillResult | None:
    """The finished cell at ``path`` (None: not there yet); refused when it was computed with
    other settings (they would mix in the summary)."""
    if not path.is_file():
        return None
    if json.loads(path.read_text()).get("settings") != settings:
        raise TVLensError(
            f"{str(path)!r} was computed with another configuration (target, preset, options, "
            "rel_tol or student_epochs): use the same ones to resume, or choose another --out."
        )
    return DistillResult.load(path)


def distill_config(
    target: str | Any, preset: str = DEFAULT_PRESET, lora_lr: float | None = None,
    atv_lr: float | None = None, atv_scale: float | None = None, **overrides: Any,
) -> CompareConfig:  # fmt: skip
    """The comparison configuration a distillation runs with: ``preset`` with ``overrides``
    (any :class:`CompareConfig` field), the target recorded by name or folder, and the single
    learning rates (``lora_lr``, ``atv_lr``) and λ (``atv_scale``) given, each refused in one
    line unless positive."""
    for name, x in (("lora_lr", lora_lr), ("atv_lr", atv_lr), ("atv_scale", atv_scale)):
        if x is not None and (isinstance(x, bool) or not isinstance(x, int | float) or x <= 0):
            raise TVLensError(f"{name} (--{name.replace('_', '-')}) must be a positive number, "
                              f"e.g. 0.003; got {x!r}.")  # fmt: skip
    if lora_lr is not None:
        overrides["peft"] = {**overrides.get("peft", {}), "lrs": [float(lora_lr)]}
    atv = {**overrides.get("atv", {})}
    if atv_lr is not None:
        atv["lrs"] = [float(atv_lr)]
    if atv_scale is not None:
        atv["scale"] = float(atv_scale)
    if atv:
        overrides["atv"] = atv
    cfg = get_compare_preset(preset).with_overrides(**overrides)
    if isinstance(target, TVModel):
        return cfg.with_overrides(target=target.spec.path or target.spec.name)
    if isinstance(target, str | Path):  # recorded as the comparison's target
        return cfg.with_overrides(target=str(target))
    return cfg


def run_distill(
    target: str | Any,
    out: str | Path = "runs/compare",
    preset: str = DEFAULT_PRESET,
    ranks: Sequence[int] = (1, 8),
    seeds: int | None = None,
    rank: int | None = None,
    student_epochs: int | None = None,
    rel_tol: float = REL_TOL,
    device: str | None = None,
    lora_lr: float | None = None,
    atv_lr: float | None = None,
    atv_scale: float | None = None,
    stop_after: int | None = None,
    seed: int | None = None,
    **overrides: Any,
) -> DistillReport:
    """``tvlens atv distill``: :func:`distill_pair` for each rank of ``ranks`` (``rank``: one
    rank instead) and each of ``seeds`` seeds (0, 1, ...; default: the preset's), for the
    comparison in ``out`` (its ``preset`` with ``overrides``; its dev-chosen variants when it
    has swept them) on
    ``target`` (a name, folder or tvlens run, or a loaded model). Students train for at most
    ``student_epochs`` (default: the comparison's ``epochs``) and stop when the KL has not
    fallen by more than ``rel_tol`` for ``patience`` epochs. Each cell is written to
    ``out/distill/`` as it finishes (a stopped run resumes by cells); then ``out/distill.json``
    and ``out/distill.md``. ``lora_lr``, ``atv_lr``, ``atv_scale``: one learning rate for the
    LoRA teachers and students, one learning rate and λ for the ATV ones, instead of the
    preset's grids (:func:`distill_config`). ``stop_after``: compute at most this many cells
    (0: none), then summarise the cells done; the others are listed as ``missing``.
    ``seed``: that seed alone instead of ``seeds`` (one process per seed or rank can share a
    folder: their cells and training folders are distinct)."""
    cfg = distill_config(target, preset, lora_lr, atv_lr, atv_scale, **overrides)
    seeds = cfg.seeds if seeds is None else seeds
    ranks = _checked(ranks, seeds, rank, rel_tol, student_epochs)
    if stop_after is not None and (isinstance(stop_after, bool) or stop_after < 0):
        raise TVLensError(f"stop_after is a number of cells, at least 0; got {stop_after!r}.")
    out = Path(out)
    epochs = student_epochs or cfg.epochs
    stopping = stopping_rule(cfg.patience, rel_tol, epochs)
    settings = _key(cfg, rel_tol=rel_tol, student_epochs=epochs)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise TVLensError(f"seed must be an integer >= 0 (or None: seeds 0, 1, ...); got {seed!r}.")
    run_seeds = range(seeds) if seed is None else [seed]
    todo = [(r, s) for s in run_seeds for r in ranks]  # seed by seed: every rank's first
    cells = {key: _reuse(cell_file(out, *key), settings) for key in todo}
    ctx, ran = None, []
    for r, s in todo:
        if cells[r, s] is not None:
            continue
        if stop_after is not None and len(ran) >= stop_after:
            break
        if ctx is None:  # loaded only when a cell is left to compute
            ctx = compare_context(cfg, as_model(target, device=device), out)
        res = distill_pair(ctx, rank=r, seed=s, rel_tol=rel_tol, student_epochs=epochs)
        write_json_atomically(cell_file(out, r, s), res.saved(extra={"settings": settings}))
        cells[r, s], ran = res, [*ran, f"r{r}_seed{s}"]
    done = [cells[key] for key in todo if cells[key] is not None]
    missing = [f"r{r}_seed{s}" for r, s in todo if cells[r, s] is None]
    rows, teachers = summarize(done)
    report = DistillReport(ranks, list(run_seeds), done, rows, teachers, stopping, "", ran,
                           missing)  # fmt: skip
    report.table = distill_table(report)
    write_json_atomically(out / "distill.json", report.saved())
    (out / "distill.md").write_text(report.table)
    return report
