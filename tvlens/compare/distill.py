"""The equal-rank claim as a distillation test: can a rank-r ATV (frozen generator, rank-r
expansion) express what a rank-r LoRA on the same sites learned, and the reverse?

Each teacher is trained on the in-domain training queries as in the comparison; a fresh
student of the other family is then trained to match the teacher's next-token distribution
at the query (the first answer token: what the comparison scores) on the same training
queries, and the remaining KL(teacher || student) is measured on held-out test queries,
in-domain and unseen. Each teacher's KL to the untouched target is the scale: a student that
learned nothing keeps about that KL. A student that brings the KL near zero expresses its
teacher's function on these queries; this tests expressivity on the data, not which family
learns better from labels (the comparison's ``atv_r*`` / ``lora_r*`` rows measure that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from tvlens.compare.config import DEFAULT_PRESET, get_compare_preset
from tvlens.compare.fitting import engine_fit, hf_logits
from tvlens.compare.registry import rank_pair
from tvlens.compare.run import build_method
from tvlens.compare.setup import CompareContext, compare_context, selection
from tvlens.models.loading import as_model
from tvlens.results import Result
from tvlens.tasks.prompts import ICLPrompt


def query_log_probs(method: Any, batch: Any, module: Any = None) -> Float[Tensor, "batch vocab"]:
    """A compare method's next-token log-probabilities at each row's query position (the
    first answer token) on an ATV batch; ``module``: the trainable module being trained
    (peft model or ATV generator), else the method's own."""
    rows = torch.arange(batch.tokens.shape[0], device=batch.tokens.device)
    if hasattr(method, "atv") and method.atv is not None:
        logits = method.atv.logits(batch, generator=module)
    else:
        logits = hf_logits(module or method.model, batch.tokens, batch.attention_mask)
    return F.log_softmax(logits[rows, batch.query_pos].float(), dim=-1)


def kl(
    teacher: Float[Tensor, "batch vocab"], student: Float[Tensor, "batch vocab"]
) -> Float[Tensor, " batch"]:
    """KL(teacher || student) per row, from log-probabilities."""
    return (teacher.exp() * (teacher - student)).sum(-1)


@torch.no_grad()
def mean_kl(teacher: Any, student: Any, prompts: Sequence[ICLPrompt], batch_of: Any) -> float:
    """Mean KL(teacher || student) at the query over ``prompts`` (``student`` None: the
    untouched target)."""
    out = []
    for start in range(0, len(prompts), 32):
        b = batch_of(list(prompts[start : start + 32])).to(teacher.ctx.device)
        t = query_log_probs(teacher, b)
        if student is None:
            rows = torch.arange(b.tokens.shape[0], device=b.tokens.device)
            logits = teacher.target(b.tokens, attention_mask=b.attention_mask)
            s = F.log_softmax(logits[rows, b.query_pos].float(), dim=-1)
        else:
            s = query_log_probs(student, b)
        out.append(kl(t, s).cpu())
    return float(torch.cat(out).mean())


@dataclass
class DistillResult(Result):
    """Per direction (``"lora->atv"``: an ATV student of a LoRA teacher, and the reverse):
    the remaining KL on held-out queries per group, the teacher's KL to the target (the
    scale), the student's KL before its distillation, and the student's accuracy."""

    rank: int
    seed: int
    directions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "seed": self.seed, "directions": self.directions}

    def to_dataframe(self):
        return pd.DataFrame([{"direction": d, "group": g, **v} for d, r in self.directions.items()
                             for g, v in r["groups"].items()])  # fmt: skip

    def plot(self, **kwargs: Any):
        import plotly.graph_objects as go

        df = self.to_dataframe()
        fig = go.Figure()
        for col in ("teacher_to_target", "student_before", "student_after"):
            fig.add_bar(x=df["direction"] + " " + df["group"], y=df[col], name=col)
        fig.update_layout(barmode="group", yaxis_title="mean KL at the query (nats)",
                          title=f"Distillation at rank {self.rank}", **kwargs)  # fmt: skip
        return fig


def _variant(ctx: CompareContext, method: str) -> dict:
    sel = selection(ctx.cfg, ctx.out, method)
    return sel["variant"] if sel else {}


def distill_pair(ctx: CompareContext, rank: int, seed: int = 0) -> DistillResult:
    """Train ``lora_r{rank}`` and ``atv_r{rank}`` teachers (their dev-selected variants when
    the comparison in ``ctx.out`` has swept them), then each family's student to match the
    other's teacher; runs in ``ctx.out/runs/distill_r{rank}_*``."""
    lora, atv = rank_pair(rank)
    names = {"lora": lora, "atv": atv}
    data = ctx.data
    teachers = {}
    for fam, name in names.items():
        m = build_method(ctx, name, seed, _variant(ctx, name))
        m.run_dir = ctx.out / "runs" / f"distill_r{rank}_teacher_{fam}__seed{seed}"
        m.fit(data.in_domain)
        teachers[fam] = m
    atv_batch = teachers["atv"].atv.batch
    out = DistillResult(rank, seed)
    for t_fam, s_fam in (("lora", "atv"), ("atv", "lora")):
        teacher = teachers[t_fam]
        student = build_method(ctx, names[s_fam], seed + 1, _variant(ctx, names[s_fam]))
        student.run_dir = ctx.out / "runs" / f"distill_r{rank}_{t_fam}_to_{s_fam}__seed{seed}"
        if s_fam == "atv":
            student.atv = student.build()
            module = student.atv.generator
            extra: dict[str, Any] = {"param_groups": student.param_groups}
        else:
            student.model = student.build()
            module = student.model
            extra = {}
        before = {g: mean_kl(teacher, student, s.test, atv_batch) for g, s in data.groups().items()}

        def loss(m: Any, b: Any, teacher: Any = teacher, student: Any = student) -> Tensor:
            with torch.no_grad():
                t = query_log_probs(teacher, b)
            return kl(t, query_log_probs(student, b, module=m)).mean()

        lr = student.variant.get("lr", 1e-3)
        info = engine_fit(student, module, loss, data.in_domain, collate=atv_batch, lr=lr,
                          weight_decay=0.0, **extra)  # fmt: skip
        groups = {}
        for g, s in data.groups().items():
            first, _ = student.correctness(s.test)
            groups[g] = {
                "teacher_to_target": mean_kl(teacher, None, s.test, atv_batch),
                "student_before": before[g],
                "student_after": mean_kl(teacher, student, s.test, atv_batch),
                "student_accuracy": float(np.mean(first)),
            }
        out.directions[f"{t_fam}->{s_fam}"] = {"groups": groups, "epochs_run": info["epochs_run"],
                                               "still_rising": info["still_rising"]}  # fmt: skip
    return out


def run_distill(
    target: str | Any,
    out: str | Path = "runs/compare",
    preset: str = DEFAULT_PRESET,
    rank: int = 1,
    seed: int = 0,
    device: str | None = None,
    **overrides: Any,
) -> DistillResult:
    """``tvlens atv distill``: :func:`distill_pair` for the comparison in ``out`` (its
    ``preset`` with ``overrides``; its dev-chosen variants when it has swept them) on
    ``target`` (a name, folder or tvlens run, or a loaded model); writes
    ``out/distill_r{rank}.json``."""
    rank_pair(rank)  # a bad rank is refused before the model loads
    cfg = get_compare_preset(preset).with_overrides(**overrides)
    if isinstance(target, str | Path):  # recorded as the comparison's target
        cfg = cfg.with_overrides(target=str(target))
    ctx = compare_context(cfg, as_model(target, device=device), Path(out))
    res = distill_pair(ctx, rank=rank, seed=seed)
    res.save(Path(out) / f"distill_r{rank}.json")
    return res
