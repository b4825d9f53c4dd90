"""What the comparison's trained methods share: batches of prompt + answer tokens, the answer
loss, the plain HF forward, trainable state on disk, and :func:`engine_fit`, which trains any
of them through :func:`tvlens.training.engine.train_run` with the comparison's protocol:
instructions redrawn per query and epoch, dev accuracy after every epoch, early stopping, and
the best-dev epoch's weights kept (another criterion: :class:`FitCriterion`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tvlens.atv.data import ATVSplits
from tvlens.errors import TVLensError
from tvlens.models.hf import quiet_transformers
from tvlens.models.loading import TVModel
from tvlens.runs.checkpoints import list_checkpoints
from tvlens.tasks.prompts import ICLPrompt, tokenize_prompts
from tvlens.training.config import TrainingConfig
from tvlens.training.engine import EpochData, RunKind, train_run

WEIGHTS = "weights.safetensors"


def by_task(prompts: Sequence[ICLPrompt]) -> dict[str, list[int]]:
    """The indices of each task's prompts."""
    idx: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        idx.setdefault(p.task, []).append(i)
    return idx


@dataclass
class LMBatch:
    """Prompt + answer tokens (left-padded) and labels on the answer tokens only."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    labels: Int[Tensor, "batch pos"]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: str | torch.device) -> LMBatch:
        return LMBatch(*(t.to(device) for t in (self.tokens, self.attention_mask, self.labels)))


def lm_batch(prompts: Sequence[ICLPrompt], target: TVModel) -> LMBatch:
    """Tokenized with the target's tokenizer and BOS policy, exactly as scoring does."""
    pb = tokenize_prompts(list(prompts), target, "left", include_answer=True, device="cpu")
    labels = torch.full_like(pb.tokens, -100)
    for i, ans in enumerate(pb.answer_ids):
        q = int(pb.query_pos[i])
        labels[i, q + 1 : q + 1 + len(ans)] = torch.tensor(ans)
    return LMBatch(pb.tokens, pb.attention_mask, labels)


def answer_ce(
    logits: Float[Tensor, "batch pos vocab"], labels: Int[Tensor, "batch pos"]
) -> Float[Tensor, ""]:
    """Cross-entropy on the answer tokens only (the loss of every trained method)."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
    )


def hf_logits(
    model: nn.Module, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos vocab"]:
    """A plain HF (or peft) causal LM on a left-padded batch: positions follow the mask, as
    in the bridge (peft shifts them past a prefix itself)."""
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=tokens, attention_mask=mask, position_ids=pos).logits


def trainable_state(module: nn.Module) -> dict[str, Tensor]:
    return {
        n: p.detach().contiguous().cpu().clone()
        for n, p in module.named_parameters()
        if p.requires_grad
    }


def load_trainable(module: nn.Module, path: Path) -> None:
    state = load_file(str(path))
    params = dict(module.named_parameters())
    with torch.no_grad():
        for n, v in state.items():
            params[n].copy_(v)


def dev_accuracy(method: Any, prompts: Sequence[ICLPrompt]) -> dict[str, float]:
    """First-token and exact-match accuracy on dev prompts, as a mean over tasks."""
    first, exact = method.correctness(prompts)
    idx = by_task(prompts)
    return {
        "dev_acc": float(np.mean([first[i].mean() for i in idx.values()])),
        "dev_exact": float(np.mean([exact[i].mean() for i in idx.values()])),
    }


def best_entry(entries: list[dict[str, Any]]) -> int:
    """The index of the first checkpoint with the best dev accuracy."""
    accs = [e["dev_acc"] for e in entries]
    return int(np.argmax(accs))


def patience_ran_out(epochs_run: int, best_epoch: int, patience: int) -> bool:
    """The stopping rule: ``patience`` epochs after the best one (``best_epoch``, from 1)
    without a better dev accuracy."""
    return epochs_run - best_epoch >= patience


@dataclass(frozen=True)
class FitCriterion:
    """What :func:`engine_fit` measures after every epoch (``evaluate``: metrics, JSON types),
    which epoch's weights it keeps (``best``: an index into the entries so far) and when it
    stops (``stop``); ``keys``: the metrics its learning curve reports. The default is the
    comparison's: dev accuracy, patience (:func:`dev_accuracy_criterion`); the distillation
    test stops on the KL to its teacher instead (:mod:`tvlens.compare.distill`)."""

    evaluate: Callable[[], dict[str, Any]]
    best: Callable[[list[dict[str, Any]]], int]
    stop: Callable[[list[dict[str, Any]]], bool]
    keys: tuple[str, ...]
    postfix: Callable[[dict[str, Any]], dict[str, str]]


def dev_accuracy_criterion(method: Any, dev: Sequence[ICLPrompt], patience: int) -> FitCriterion:
    """Dev accuracy after every epoch, the first best-dev epoch kept, stopped after
    ``patience`` epochs without a better one."""
    return FitCriterion(
        evaluate=lambda: dev_accuracy(method, dev),
        best=best_entry,
        stop=lambda es: patience_ran_out(len(es), best_entry(es) + 1, patience),
        keys=("dev_acc", "dev_exact"),
        postfix=lambda e: {"dev": f"{e['dev_acc']:.3f}"},
    )


def engine_fit(
    method: Any,
    module: nn.Module,
    loss: Callable[[nn.Module, Any], Tensor],
    splits: ATVSplits,
    collate: Callable[[list[ICLPrompt]], Any],
    lr: float,
    weight_decay: float,
    save: Callable[[Path, int], None] | None = None,
    load: Callable[[Path, torch.device], None] | None = None,
    required: tuple[str, ...] = (WEIGHTS,),
    param_groups: Callable[[], list[dict[str, Any]]] | None = None,
    evaluate_extra: Callable[[], dict[str, Any]] | None = None,
    criterion: FitCriterion | None = None,
) -> dict[str, Any]:
    """Train ``module`` on ``splits.train`` with the comparison's protocol, in
    ``method.run_dir``: every query in one of its task's training instructions, redrawn per
    epoch (:meth:`CompareData.train_template`); dev accuracy after every epoch; stop after
    ``cfg.patience`` epochs without a better one (at most ``cfg.epochs``); then the best-dev
    epoch's weights are loaded back (``criterion``: another measure, rule and choice of
    epoch). Returns the learning curve and the training loss."""
    ctx, cfg, seed = method.ctx, method.ctx.cfg, method.seed
    train = splits.train
    crit = criterion or dev_accuracy_criterion(method, splits.dev, cfg.patience)
    # The schedule stays constant (no decay over the budget): a run stopped by patience is the
    # same under any longer budget, which lets seed 0 reuse its sweep cell (compare._same_run).
    tcfg = TrainingConfig(
        steps=1,  # EpochData decides the steps
        batch_size=cfg.batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=cfg.warmup_steps,
        grad_clip=cfg.grad_clip,
        seed=seed,
        log_every=5,
        mixed_precision=cfg.mixed_precision,
    )
    run_dir = method.run_dir or ctx.out / "runs" / f"{method.name}__seed{seed}"
    if run_dir.is_dir() and not (run_dir / "checkpoints").is_dir():
        shutil.rmtree(run_dir)  # killed after its checkpoints were cleared: train again

    def save_weights(folder: Path, step: int) -> None:
        save_file(trainable_state(module), str(folder / WEIGHTS))

    def load_weights(folder: Path, device: torch.device) -> None:
        load_trainable(module, folder / WEIGHTS)

    def evaluate(model: nn.Module, step: int) -> dict[str, Any]:
        out: dict[str, Any] = crit.evaluate()
        if evaluate_extra is not None:
            out.update(evaluate_extra())
        return out

    data = EpochData(
        n_examples=len(train),
        collate=lambda idx, epoch: collate(
            [ctx.data.train_template(train[int(i)], seed, epoch) for i in idx]
        ),
        epochs=cfg.epochs,
        epoch_aware=True,
    )
    kind = RunKind(
        model=module, data=data, loss=loss, save=save or save_weights,
        load=load or load_weights, evaluate=evaluate, required_files=required, stop=crit.stop,
        param_groups=param_groups, postfix=crit.postfix,
    )  # fmt: skip
    info = {"kind": f"compare/{method.name}", "config": {**tcfg.to_dict(), "method": method.name,
            "variant": method.variant, "epochs": cfg.epochs, "patience": cfg.patience,
            "n_examples": len(train)}}  # fmt: skip
    res = train_run(kind, tcfg, run_dir, info, resume=True, device=ctx.device,
                    progress=ctx.progress, desc=f"{method.name} s{seed}")  # fmt: skip
    entries = res.metrics["checkpoints"]
    best = crit.best(entries)
    ckpt = {c.step: c for c in list_checkpoints(run_dir)}[entries[best]["step"]]
    (load or load_weights)(ckpt.path, torch.device(ctx.device))
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return _fit_report(res, best, lr, cfg.epochs, crit.keys)


def _fit_report(
    res: Any, best: int, lr: float, epochs: int, keys: tuple[str, ...] = ("dev_acc", "dev_exact")
) -> dict[str, Any]:
    """What :func:`engine_fit` reports of a finished run (``res``, a ``TrainResult``) whose
    kept checkpoint is ``best``: the curve of the criterion's ``keys``, the training loss
    (over the last and the best epoch), whether the criterion stopped it or the curve was
    still improving at its last epoch."""
    entries = res.metrics["checkpoints"]
    curve_keys = ("step", "epoch", *keys)
    losses = res.metrics.get("train_loss", [])
    steps_per_epoch = entries[0]["step"] if entries else 1
    last_epoch = [v for s, v in losses if s > entries[-1]["step"] - steps_per_epoch]
    best_epoch = [v for s, v in losses if entries[best]["step"] - steps_per_epoch < s
                  <= entries[best]["step"]]  # fmt: skip
    stopped_early = len(entries) < epochs
    return {
        "lr": lr,
        "curve": [{k: e[k] for k in e if k in curve_keys} for e in entries],
        "train_loss_curve": losses,
        "best_epoch": entries[best].get("epoch"),
        "best_dev_acc": entries[best].get("dev_acc"),
        "epochs_run": len(entries),
        "stopped_early": stopped_early,
        # The curve was still improving when the epochs ran out: say so next to the number.
        "still_rising": not stopped_early and best == len(entries) - 1 and len(entries) > 1,
        "final_train_loss": float(np.mean(last_epoch)) if last_epoch else None,
        "best_epoch_train_loss": float(np.mean(best_epoch)) if best_epoch else None,
        "steps": entries[-1]["step"] if entries else 0,
        "extra": {k: v for k, v in entries[best].items() if k not in curve_keys},
        "engine_seconds": round(res.seconds, 2),
    }


# ---------------------------------------------------------------------------- plain HF copies


def hf_source(target: TVModel) -> tuple[str, str | None]:
    s = target.spec
    if s.path:
        return s.path, None
    return s.name, s.revision


def fresh_hf(target: TVModel) -> nn.Module:
    """A separate plain HF copy of the target (same weights, same device and dtype), loaded
    again from its folder or hub name."""
    from transformers import AutoModelForCausalLM

    if target.spec.source == "memory":
        # The bridge wraps the HF model's modules in place: no plain HF model is left to copy.
        raise TVLensError(
            "The peft baselines train a plain HF copy of the target, and a model passed in "
            "memory has none left to copy: save it (model.save_pretrained(folder), with its "
            "tokenizer) and pass the folder as the target."
        )
    src, rev = hf_source(target)
    with quiet_transformers():
        hf = AutoModelForCausalLM.from_pretrained(src, revision=rev, dtype=target.dtype)
    return hf.to(target.device).eval()
