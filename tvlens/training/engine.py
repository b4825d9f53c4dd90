"""The training engine: one loop for every kind of training run in tvlens.

A run kind (token ICL, sparse linear regression, fine-tuning, adaptive task vectors) plugs in
through :class:`RunKind`: its module, its batches, its loss, its evaluation at checkpoints and
how it writes its files. The engine owns the rest:

* optimizer (AdamW, or Adam), linear warm-up then a constant / linear / cosine schedule,
  gradient clipping, gradient accumulation over micro-batches;
* batches that depend on the step only (:class:`StepData`: ``batch(step, micro)``), or epochs
  over a dataset shuffled by a permutation seeded with ``(seed, epoch)`` (:class:`EpochData`),
  so a resumed run sees exactly the batches an uninterrupted run would;
* checkpoints at log-spaced steps (like Pythia's) or at the end of each epoch, each written
  atomically as ``checkpoints/step-NNNNNNNNN/`` with the kind's files plus the optimizer state
  (``training_state.pt``, kept in the newest checkpoint only); ``resume=True`` continues from
  the last complete checkpoint and reaches bit-identical weights on CPU;
* ``config.json`` (written once) and ``metrics.json`` (rewritten at each checkpoint:
  ``{"checkpoints": [{"step", ...evaluation}], "train_loss": [[step, mean loss]]}``);
* a tqdm bar with the training loss; bf16 / fp16 autocast on a GPU (a no-op on CPU);
* ``accelerate``: launched on several processes (``accelerate launch``, ``torchrun``), the
  model is wrapped for data parallelism, each process draws its own micro-batches (process
  ``r`` takes micro-batches ``r * grad_accum ...``: the global batch is ``processes x
  grad_accum x batch_size`` rows) and the main process writes the files.

Example (a kind is a handful of callables; see :mod:`tvlens.training.train` for a full one)::

    kind = RunKind(
        model=net,
        data=StepData(lambda step, micro: make_batch(step, micro)),
        loss=lambda model, batch: F.mse_loss(model(batch.x), batch.y),
        save=lambda folder, step: save_file(net.state_dict(), str(folder / "w.safetensors")),
        load=lambda folder, device: net.load_state_dict(load_file(str(folder / "w.safetensors"))),
        evaluate=lambda model, step: {"loss": dev_loss(model)},
        required_files=("w.safetensors",),
    )
    result = train_run(kind, cfg, "runs/x", {"config": cfg.to_dict()}, device="cpu")
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import tvlens
from tvlens.errors import TVLensError
from tvlens.models.loading import resolve_device
from tvlens.runs import KIND_KEY, tidy_on_error
from tvlens.runs.checkpoints import (
    REQUIRED_FILES,
    Checkpoint,
    clean_temporary,
    list_checkpoints,
    write_json_atomically,
)
from tvlens.runtime import ThreadGovernor, configure_threads
from tvlens.training.checkpointing import (
    STATE_FILE,
    check_run_folder,
    load_run_config,
    restore_checkpoint,
    save_checkpoint,
)
from tvlens.training.config import TrainingConfig, resolve_config
from tvlens.training.plan import (
    B,
    EpochData,
    Plan,
    StepData,
    epoch_indices,
    make_plan,
    step_micro_batches,
)


@dataclass
class RunKind(Generic[B]):
    """What a kind of training run plugs into :func:`train_run`.

    Attributes:
        model: The module that is trained and saved (only the trainable part: a frozen model
            the loss also runs stays outside). The engine moves it to the device, and under
            ``accelerate launch`` wraps it for data parallelism.
        data: :class:`StepData` or :class:`EpochData`.
        loss: ``loss(model, batch)``: the scalar to minimise (mean over the batch's rows).
            ``model`` is the module to call (possibly wrapped; the hooks of ``self.model``'s
            submodules still fire); batches arrive on the device (see ``to_device``).
        save: ``save(folder, step)`` writes the kind's files for checkpoint ``step`` into a
            fresh temporary folder (the engine adds the optimizer state and renames it into
            place). Called on the main process only.
        load: ``load(folder, device)`` loads ``model``'s weights back from a checkpoint folder
            (to resume).
        evaluate: ``evaluate(model, step)``: metrics at a checkpoint (JSON types), stored in
            ``metrics.json``; ``model`` is the unwrapped module in eval mode.
        parameters: The parameters to optimise; default: ``model``'s that require grad.
        to_device: Moves a batch to the device; default: ``batch.to(device)`` for a tensor or
            an object with ``.to``, element-wise for tuples, lists and dicts.
        postfix: The progress bar's fields after an evaluation (default: its ``"loss"``).
        required_files: What a complete checkpoint folder holds besides the state file (a
            checkpoint missing one is not resumed from).
        setup: ``setup(device)``, called once on each process with its device before
            training: where a kind places what the loss runs but the engine does not train
            (a frozen model), since under data parallelism the device is known only then.
        stop: ``stop(entries)``: after each checkpoint's evaluation, whether to end the run
            there (early stopping); ``entries`` are ``metrics["checkpoints"]`` so far. A
            resumed run that had stopped stays stopped.
        param_groups: ``param_groups()``: optimizer parameter groups (dicts with ``params``
            and e.g. their own ``lr``) instead of ``parameters`` with ``cfg.lr``.
    """

    model: nn.Module
    data: StepData[B] | EpochData[B]
    loss: Callable[[nn.Module, B], Tensor]
    save: Callable[[Path, int], None]
    load: Callable[[Path, torch.device], None]
    evaluate: Callable[[nn.Module, int], dict[str, Any]] | None = None
    parameters: Callable[[], Iterable[nn.Parameter]] | None = None
    to_device: Callable[[B, torch.device], B] | None = None
    postfix: Callable[[dict[str, Any]], dict[str, str]] | None = None
    required_files: Sequence[str] = REQUIRED_FILES
    setup: Callable[[torch.device], None] | None = None
    stop: Callable[[list[dict[str, Any]]], bool] | None = None
    param_groups: Callable[[], list[dict[str, Any]]] | None = None


@dataclass
class TrainResult:
    """A finished (or stopped) run: its folder, configuration, checkpoints (oldest first),
    metrics as in ``metrics.json``, whether it reached the last step, and its wall time."""

    run_dir: Path
    config: Any
    checkpoints: list[Checkpoint]
    metrics: dict
    completed: bool
    seconds: float

    @property
    def final(self) -> Checkpoint:
        return self.checkpoints[-1]

    def __str__(self) -> str:
        """Checkpoints, folder and time, and the last checkpoint's loss and accuracy (or, for
        regression, the query MSE per task)."""
        last = self.metrics["checkpoints"][-1] if self.metrics.get("checkpoints") else {}
        said = [f"final loss {last['loss']:.3f}"] if "loss" in last else []
        if "mean_icl_accuracy" in last:
            said.append(f"ICL accuracy {last['mean_icl_accuracy']:.3f}")
        if "query_loss" in last:
            mse = ", ".join(f"{t} {v:.3f}" for t, v in last["query_loss"].items())
            said.append(f"final MSE {mse}")
        head = f"{len(self.checkpoints)} checkpoints in {self.run_dir} ({self.seconds:.0f} s)"
        return head + ("; " + ", ".join(said) if said else "")


def lr_factor(cfg: TrainingConfig, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier after ``s`` scheduler steps: linear warm-up
    ``(s + 1) / warmup_steps``, then constant, or a linear / cosine decay over the remaining
    steps (as transformers' ``get_{linear,cosine}_schedule_with_warmup``)."""
    warm = cfg.warmup_steps

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        done = min(max(s - warm, 0) / max(total_steps - warm, 1), 1.0)
        if cfg.schedule == "linear":
            return 1.0 - done
        return 0.5 * (1.0 + math.cos(math.pi * done))

    return f


def make_optimizer(
    cfg: TrainingConfig, params: Iterable[nn.Parameter] | list[dict[str, Any]]
) -> torch.optim.Optimizer:
    """AdamW (or Adam) at ``cfg.lr`` over ``params``: parameters, or parameter groups (dicts
    with ``params`` and their own options, e.g. ``lr``)."""
    params = list(params)
    if params and isinstance(params[0], dict):
        if not any(len(g["params"]) for g in params):
            raise TVLensError("Nothing to train: no parameter requires grad.")
        params = [g for g in params if g["params"]]
    if not params:
        raise TVLensError("Nothing to train: no parameter requires grad.")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def move_to(batch: Any, device: torch.device) -> Any:
    """``batch`` on ``device``: a tensor or anything with ``.to``, or a tuple / list / dict
    of those (recursively); other values unchanged."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if hasattr(batch, "to"):
        return batch.to(device)
    return batch


# ---------------------------------------------------------------------------- the loop


def make_accelerator(cfg: TrainingConfig, device: str | torch.device | None):
    """The ``accelerate.Accelerator`` of a run and the device to train on.

    Launched on several processes (``accelerate launch``, ``torchrun``), accelerate decides the
    device. In one process, ``device`` does (default: the best available) and the model is
    placed by the engine; accelerate keeps its state in a process-wide singleton that refuses
    a second run with another device or precision, so each run starts it afresh (as
    accelerate's own notebook launcher and tests do). Mixed precision is used on CUDA only.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState, GradientState

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # accelerate runs processes on CPU (gloo) only when asked to: without a GPU, or
        # with device="cpu"
        cpu = not torch.cuda.is_available() or (
            device is not None and torch.device(device).type == "cpu"
        )
        dev = PartialState(cpu=cpu).device
        mp = cfg.mixed_precision if dev.type == "cuda" else "no"
        return Accelerator(cpu=cpu, mixed_precision=mp), dev
    dev = torch.device(resolve_device(device))
    mp = cfg.mixed_precision if dev.type == "cuda" else "no"
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Accelerator(cpu=dev.type == "cpu", mixed_precision=mp, device_placement=False), dev


@tidy_on_error
def train_run(
    kind: RunKind[B],
    cfg: TrainingConfig,
    run_dir: str | Path,
    run_info: dict[str, Any],
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    checkpoints: Literal["auto", "log", "epoch"] | Sequence[int] = "auto",
    desc: str | None = None,
) -> TrainResult:
    """Train ``kind`` as ``cfg`` says, writing the run folder ``run_dir``.

    Args:
        kind: The run kind (model, batches, loss, evaluation, files).
        cfg: The shared training options (a run kind's config subclasses
            :class:`~tvlens.training.config.TrainingConfig`).
        run_dir: The run folder; created. ``config.json`` is ``{"tvlens": version,
            "kind": ..., **run_info, "device": ...}``; ``run_info["config"]`` is what a resumed
            run must match (normally ``cfg.to_dict()``); ``run_info["kind"]`` names the kind
            of run folder (``tvlens.runs``; default ``"train"``).
        resume: Continue the run already in ``run_dir`` from its last complete checkpoint
            (without it, an existing run is an error: nothing is overwritten).
        device: ``"cpu"``, ``"cuda"``...; default: the best available (ignored under
            ``accelerate launch``).
        stop_after: Stop (as if killed) once this step is done, without finishing the run.
        checkpoints: ``"auto"`` (log-spaced with :class:`StepData`, per epoch with
            :class:`EpochData`), ``"log"``, ``"epoch"``, or a list of steps.
        desc: The progress bar's label (default: ``train <folder name>``).
    """
    t0 = time.time()
    configure_threads()  # tvlens.runtime: spin-waiting threads multiply run time under load
    governor = ThreadGovernor()  # policy "auto": the threads follow the other processes' load
    run_dir = Path(run_dir)
    # The folder's kind (``tvlens.runs``): a run kind names itself in ``run_info``.
    run_info = {KIND_KEY: "train", **run_info}
    existing = check_run_folder(run_dir, run_info["config"], resume, run_info[KIND_KEY])
    accelerator, dev = make_accelerator(cfg, device)
    main = accelerator.is_main_process
    plan = make_plan(cfg, kind.data, checkpoints, accelerator.num_processes)
    model = kind.model.to(dev)
    if kind.setup is not None:
        kind.setup(dev)
    pmodel = accelerator.prepare_model(model) if accelerator.num_processes > 1 else model
    groups, params = _trained_parameters(kind, model)
    optimizer = accelerator.prepare_optimizer(
        make_optimizer(cfg, groups if groups is not None else params), device_placement=False
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer.optimizer, lr_factor(cfg, plan.steps))
    to_device = kind.to_device or move_to
    torch.manual_seed(cfg.seed)
    start, metrics = _start_or_resume(kind, run_dir, run_info, existing is not None, accelerator,
                                      optimizer, scheduler, dev)  # fmt: skip

    stopped = (
        kind.stop is not None and bool(metrics["checkpoints"]) and kind.stop(metrics["checkpoints"])
    )
    model.train()
    bar = tqdm(
        range(start + 1, plan.steps + 1),
        initial=start,
        total=plan.steps,
        desc=desc or f"train {run_dir.name}",
        disable=not progress or not main,
    )
    running: list[float] = []
    completed = True
    for step in bar:
        if stopped:
            break
        governor.step()
        running.append(_optimizer_step(kind, cfg, plan, step, accelerator, pmodel, params,
                                       optimizer, scheduler, dev, to_device))  # fmt: skip
        if step % cfg.log_every == 0:
            metrics["train_loss"].append([step, float(np.mean(running))])
            running = []
            bar.set_postfix(loss=f"{metrics['train_loss'][-1][1]:.3f}")
        if step in plan.checkpoints:
            entry = _checkpoint(kind, model, step, plan, metrics, run_dir, accelerator, optimizer,
                                scheduler)  # fmt: skip
            if "loss" in entry or kind.postfix is not None:
                post = kind.postfix(entry) if kind.postfix else {"loss": f"{entry['loss']:.3f}"}
                bar.set_postfix(**post)
            if kind.stop is not None and kind.stop(metrics["checkpoints"]):
                stopped = True  # early stop: the run is complete here
                continue
        if stop_after is not None and step >= stop_after and step < plan.steps:
            completed = False
            break
    bar.close()
    ckpts = list_checkpoints(run_dir) if (run_dir / "checkpoints").is_dir() else []
    return TrainResult(run_dir, cfg, ckpts, metrics, completed, time.time() - t0)


def _trained_parameters(kind: RunKind[B], model: nn.Module) -> tuple[list[dict] | None, list]:
    """The kind's parameter groups (or None) and every parameter the optimizer updates (the
    kind's, or the model's that require a gradient)."""
    groups = kind.param_groups() if kind.param_groups else None
    if groups is not None:
        params = [p for g in groups for p in g["params"]]
    else:
        params = list(
            kind.parameters()
            if kind.parameters
            else (p for p in model.parameters() if p.requires_grad)
        )
    return groups, params


def _start_or_resume(kind: RunKind[B], run_dir: Path, run_info: dict[str, Any], existing: bool,
                     accelerator: Any, optimizer: Any, scheduler: Any,
                     dev: torch.device) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """The step to start after and the metrics so far: restored from the last complete
    checkpoint of an ``existing`` run, else 0 and none (the new run's ``config.json`` written)."""
    metrics: dict[str, Any] = {"checkpoints": [], "train_loss": []}
    start = 0
    main = accelerator.is_main_process
    if existing:
        if main:
            clean_temporary(run_dir)
        accelerator.wait_for_everyone()
        start, metrics = restore_checkpoint(
            run_dir, kind.load, kind.required_files, optimizer, scheduler, dev, metrics,
            accelerator.scaler,
        )  # fmt: skip
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        info = {"tvlens": tvlens.__version__, **run_info, "device": str(dev)}
        write_json_atomically(run_dir / "config.json", info)
    return start, metrics


def _checkpoint(kind: RunKind[B], model: nn.Module, step: int, plan: Any,
                metrics: dict[str, Any], run_dir: Path, accelerator: Any, optimizer: Any,
                scheduler: Any) -> dict[str, Any]:  # fmt: skip
    """At a checkpoint step: the kind's evaluation (model in eval mode, no gradients), its
    entry appended to ``metrics``, and (main process) the checkpoint and ``metrics.json``."""
    entry: dict[str, Any] = {"step": step}
    if plan.steps_per_epoch is not None:
        entry["epoch"] = plan.epoch(step)
    if kind.evaluate is not None:
        model.eval()
        with torch.no_grad():
            entry.update(kind.evaluate(model, step))
        model.train()
    metrics["checkpoints"].append(entry)
    if accelerator.is_main_process:
        save_checkpoint(run_dir, step, kind.save, optimizer, scheduler, accelerator.scaler)
        write_json_atomically(run_dir / "metrics.json", metrics)
    accelerator.wait_for_everyone()
    return entry


def train_from_preset(
    run_kind: str,
    make_kind: Callable[[Any, str | None], tuple[RunKind, dict[str, Any]]],
    get_preset: Callable[[str], TrainingConfig],
    out: str | Path,
    preset: str,
    config: TrainingConfig | None,
    overrides: dict[str, Any],
    **run: Any,
) -> TrainResult:
    """What ``train_synthetic`` and ``train_regression`` share: the configuration (``config``,
    or preset ``preset``, with ``overrides``), a check of the run folder before anything is
    built, the kind (``make_kind(cfg, preset_name)`` -> kind and ``config.json`` fields), and
    :func:`train_run` with ``run`` (resume, device, stop_after, progress)."""
    cfg, preset_name = resolve_config(config, preset, get_preset, overrides)
    resolve_device(run.get("device"))  # an unknown or absent device fails before the folder
    check_run_folder(Path(out), cfg.to_dict(), run.get("resume", False), run_kind)
    kind, run_info = make_kind(cfg, preset_name)
    return train_run(kind, cfg, out, run_info, **run)


def _optimizer_step(
    kind: RunKind,
    cfg: TrainingConfig,
    plan: Plan,
    step: int,
    accelerator: Any,
    pmodel: nn.Module,
    params: list[nn.Parameter],
    optimizer: Any,
    scheduler: Any,
    device: torch.device,
    to_device: Callable[[Any, torch.device], Any],
) -> float:
    """One optimizer step over this process's micro-batches of ``step``; the step's loss.

    Accumulation is done here rather than with ``accelerator.accumulate``, which divides
    every micro-batch by a fixed count: the last step of an epoch may have fewer or shorter
    micro-batches, so each is weighted by its share of the step's rows. Gradients are
    all-reduced on the last micro-batch only (``no_sync`` before)."""
    micro = step_micro_batches(
        kind.data, cfg, plan, step, accelerator.process_index, accelerator.num_processes
    )
    value = 0.0
    for j, (batch, weight) in enumerate(micro):
        sync = nullcontext() if j == len(micro) - 1 else accelerator.no_sync(pmodel)
        with sync:
            with accelerator.autocast():
                loss = kind.loss(pmodel, to_device(batch, device))
            v = loss.item()
            if not math.isfinite(v):
                raise TVLensError(f"Loss became {v} at step {step}: lower the lr.")
            accelerator.backward(loss * weight)
        value += v * weight / accelerator.num_processes
    if accelerator.num_processes > 1:  # each process holds its share of the step's loss
        value = float(accelerator.reduce(torch.tensor(value, device=device), reduction="sum"))
    if cfg.grad_clip > 0:
        accelerator.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()
    if not optimizer.step_was_skipped:  # an fp16 overflow skips the step, not the schedule
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return value


__all__ = [
    "STATE_FILE",
    "EpochData",
    "Plan",
    "RunKind",
    "StepData",
    "TrainResult",
    "check_run_folder",
    "epoch_indices",
    "load_run_config",
    "lr_factor",
    "make_optimizer",
    "make_plan",
    "move_to",
    "step_micro_batches",
    "train_from_preset",
    "train_run",
]
