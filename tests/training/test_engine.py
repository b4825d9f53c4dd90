"""The training engine on a toy run kind: batches by step or by epoch, accumulation, resume,
checkpoints, schedule, and the errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tvlens.errors import CheckpointError, TVLensError
from tvlens.runs.checkpoints import list_checkpoints
from tvlens.training.config import TrainingConfig
from tvlens.training.engine import (
    STATE_FILE,
    EpochData,
    RunKind,
    StepData,
    epoch_indices,
    lr_factor,
    make_plan,
    step_micro_batches,
    train_run,
)

W_TRUE = torch.linspace(-1, 1, 6)
X_ALL = torch.randn(37, 6, generator=torch.Generator().manual_seed(0))
Y_ALL = X_ALL @ W_TRUE


def step_batch(step: int, micro: int, rows: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + micro)
    x = torch.randn(rows, 6, generator=g)
    return x, x @ W_TRUE


def toy_kind(data, seen: list | None = None) -> RunKind:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def save(folder: Path, step: int) -> None:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "w.st"))

    def load(folder: Path, device: torch.device) -> None:
        net.load_state_dict(load_file(str(folder / "w.st"), device=str(device)))

    def loss(model, batch):
        x, y = batch
        return F.mse_loss(model(x)[:, 0], y)

    def evaluate(model, step: int) -> dict:
        return {"loss": float(F.mse_loss(model(X_ALL)[:, 0], Y_ALL))}

    def collate(idx: np.ndarray):
        if seen is not None:
            seen.append(idx.tolist())
        return X_ALL[idx], Y_ALL[idx]

    if data == "steps":
        data = StepData(lambda s, m: step_batch(s, m))
    elif data == "epochs":
        data = EpochData(len(X_ALL), collate, epochs=3)
    return RunKind(net, data, loss, save, load, evaluate=evaluate, required_files=("w.st",))


def cfg(**kw) -> TrainingConfig:
    base = dict(steps=30, batch_size=8, lr=1e-2, warmup_steps=5, n_checkpoints=4,
                first_checkpoint=3, log_every=5)  # fmt: skip
    return TrainingConfig(**{**base, **kw})


def run(tmp: Path, kind: RunKind, c: TrainingConfig, **kw):
    return train_run(kind, c, tmp, {"config": c.to_dict()}, device="cpu", progress=False, **kw)


def weights(res) -> dict[str, torch.Tensor]:
    return load_file(str(res.final.path / "w.st"))


def test_step_run_writes_folder_learns_and_resumes_bit_identically(tmp_path):
    c = cfg()
    full = run(tmp_path / "full", toy_kind("steps"), c)
    assert full.completed and [ck.step for ck in full.checkpoints] == [3, 6, 14, 30]
    m = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert m == full.metrics and [e["step"] for e in m["checkpoints"]] == [3, 6, 14, 30]
    assert m["checkpoints"][-1]["loss"] < 0.5 * m["checkpoints"][0]["loss"]
    assert [s for s, _ in m["train_loss"]] == [5, 10, 15, 20, 25, 30]
    conf = json.loads((tmp_path / "full" / "config.json").read_text())
    assert conf["config"] == c.to_dict() and conf["device"] == "cpu" and "tvlens" in conf
    # only the newest checkpoint keeps the optimizer state
    assert [(ck.path / STATE_FILE).exists() for ck in full.checkpoints] == [0, 0, 0, 1]

    part = run(tmp_path / "part", toy_kind("steps"), c, stop_after=8)
    assert not part.completed and part.checkpoints[-1].step == 6
    with pytest.raises(TVLensError, match="already holds"):
        run(tmp_path / "part", toy_kind("steps"), c)
    with pytest.raises(TVLensError, match="different configuration"):
        run(tmp_path / "part", toy_kind("steps"), cfg(lr=2e-2), resume=True)
    resumed = run(tmp_path / "part", toy_kind("steps"), c, resume=True)
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["checkpoints"] == full.metrics["checkpoints"]


def test_epochs_visit_every_example_once_and_resume_mid_epoch(tmp_path):
    seen: list = []
    c = cfg(grad_accum=2)  # 37 examples, micro-batches of 8: 5 per epoch, 3 steps per epoch
    full = run(tmp_path / "full", toy_kind("epochs", seen), c)
    assert [ck.step for ck in full.checkpoints] == [3, 6, 9]
    assert [e["epoch"] for e in full.metrics["checkpoints"]] == [1, 2, 3]
    for e in range(3):
        epoch = sum(seen[5 * e : 5 * e + 5], [])
        assert sorted(epoch) == list(range(37))
        assert epoch == epoch_indices(toy_kind("epochs").data, c.seed, e + 1).tolist()
    assert seen[0] != seen[5]  # reshuffled each epoch

    # checkpoint 4 is in the middle of epoch 2
    full = run(tmp_path / "full2", toy_kind("epochs"), c, checkpoints=[4])
    assert [ck.step for ck in full.checkpoints] == [4, 9]
    part = run(tmp_path / "part", toy_kind("epochs"), c, checkpoints=[4], stop_after=5)
    assert part.checkpoints[-1].step == 4
    resumed = run(tmp_path / "part", toy_kind("epochs"), c, checkpoints=[4], resume=True)
    assert [e["epoch"] for e in resumed.metrics["checkpoints"]] == [2, 3]
    a, b = weights(full), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_accumulated_micro_batches_equal_one_large_batch():
    plan = make_plan(cfg(grad_accum=3), EpochData(37, lambda i: i, epochs=1))
    assert plan.steps == 2  # 5 micro-batches in steps of 3: 3 + 2
    last = step_micro_batches(EpochData(37, lambda i: i, epochs=1), cfg(grad_accum=3), plan, 2)
    assert [len(b) for b, _ in last] == [8, 5] and sum(w for _, w in last) == pytest.approx(1)

    kind = toy_kind("steps")
    torch.manual_seed(1)
    x, y = torch.randn(16, 6), torch.randn(16)
    big = torch.autograd.grad(kind.loss(kind.model, (x, y)), list(kind.model.parameters()))
    acc = [torch.zeros_like(g) for g in big]
    for rows in (slice(0, 8), slice(8, 16)):
        loss = kind.loss(kind.model, (x[rows], y[rows])) * 0.5
        for s, g in zip(acc, torch.autograd.grad(loss, list(kind.model.parameters())), strict=True):
            s += g
    assert all(torch.allclose(s, g, atol=1e-6) for s, g in zip(acc, big, strict=True))


def test_frozen_module_is_set_up_on_the_device_and_only_the_trainable_one_is_saved(tmp_path):
    frozen = torch.nn.Linear(6, 6)
    before = frozen.weight.detach().clone()
    placed = []
    kind = toy_kind("steps")
    loss = kind.loss
    kind.loss = lambda model, batch: loss(model, (frozen(batch[0]), batch[1]))
    kind.setup = lambda device: placed.append(frozen.to(device).requires_grad_(False))
    res = run(tmp_path / "r", kind, cfg(steps=5))
    assert len(placed) == 1 and torch.equal(frozen.weight, before)
    assert set(weights(res)) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_accumulation_runs_and_mixed_precision_is_a_no_op_on_cpu(tmp_path):
    plain = run(tmp_path / "a", toy_kind("steps"), cfg(steps=6))
    bf16 = run(tmp_path / "b", toy_kind("steps"), cfg(steps=6, mixed_precision="bf16"))
    a, b = weights(plain), weights(bf16)
    assert all(torch.equal(a[k], b[k]) for k in a)
    accum = run(tmp_path / "c", toy_kind("steps"), cfg(steps=6, grad_accum=2, optimizer="adam"))
    assert accum.completed and not all(torch.equal(a[k], weights(accum)[k]) for k in a)


def test_schedule_warms_up_then_holds_or_decays():
    f = lr_factor(cfg(warmup_steps=4), 20)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(cfg(warmup_steps=0), 20)(0) == 1.0
    g = lr_factor(cfg(warmup_steps=4, schedule="cosine"), 20)
    assert g(3) == g(4) == 1.0 and g(12) == pytest.approx(0.5) and 0 < g(19) < 0.01
    h = lr_factor(cfg(warmup_steps=4, schedule="linear"), 20)
    assert h(12) == pytest.approx(0.5) and h(19) == pytest.approx(1 / 16)


def test_bad_options_and_runs_are_clear_errors(tmp_path):
    with pytest.raises(TVLensError, match="optimizer must be one of"):
        cfg(optimizer="sgd")
    with pytest.raises(TVLensError, match="Unknown training option"):
        cfg().with_overrides(stpes=3)
    kind = toy_kind("steps")
    kind.loss = lambda model, batch: torch.tensor(math.nan, requires_grad=True)
    with pytest.raises(TVLensError, match="Loss became nan at step 1"):
        run(tmp_path / "nan", kind, cfg())
    res = run(tmp_path / "r", toy_kind("steps"), cfg(steps=8), stop_after=4)
    (list_checkpoints(res.run_dir)[-1].path / "w.st").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        run(tmp_path / "r", toy_kind("steps"), cfg(steps=8), resume=True)
    for p in kind.model.parameters():
        p.requires_grad_(False)
    with pytest.raises(TVLensError, match="Nothing to train"):
        run(tmp_path / "frozen", kind, cfg())


def test_default_config_json_keeps_the_keys_of_runs_before_the_engine():
    d = TrainingConfig().to_dict()
    assert "grad_accum" not in d and "mixed_precision" not in d
    assert TrainingConfig(grad_accum=2).to_dict()["grad_accum"] == 2


@pytest.mark.slow
def test_two_data_parallel_processes_equal_one_process_accumulating_two(tmp_path):
    """torchrun with 2 CPU processes (gloo): each draws its own micro-batch of a step, the
    gradients are averaged, and the main process writes the run, as one process with
    grad_accum=2 would."""
    import os
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           str(Path(__file__).parent / "ddp_worker.py"), str(tmp_path / "ddp")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = run(tmp_path / "one", toy_kind("steps"), cfg(steps=12, grad_accum=2))
    ddp = load_file(str(list_checkpoints(tmp_path / "ddp")[-1].path / "w.st"))
    assert all(torch.allclose(ddp[k], v, atol=1e-6) for k, v in weights(one).items())
    logged = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert [c["step"] for c in logged["checkpoints"]] == [c.step for c in one.checkpoints]


def test_early_stop_ends_the_run_and_a_resumed_stopped_run_stays_stopped(tmp_path):
    """``stop`` is asked after every checkpoint's evaluation; a run it ends is complete (no
    further steps, no further checkpoints), and resuming it trains nothing more."""
    scripted = iter([0.5, 0.7, 0.6, 0.6, 0.9, 0.9, 0.9, 0.9])
    kind = toy_kind("epochs")
    kind.data = EpochData(len(X_ALL), kind.data.collate, epochs=8)
    kind.evaluate = lambda model, step: {"dev_acc": next(scripted)}
    asked: list[int] = []

    def stop(entries):
        asked.append(len(entries))
        accs = [e["dev_acc"] for e in entries]
        return len(accs) - 1 - int(np.argmax(accs)) >= 2  # 2 epochs without a better one

    kind.stop = stop
    res = run(tmp_path / "r", kind, cfg())
    assert asked == [1, 2, 3, 4] and res.completed  # best 0.7 at epoch 2, then 0.6, 0.6
    assert [e["epoch"] for e in res.metrics["checkpoints"]] == [1, 2, 3, 4]
    again = run(tmp_path / "r", kind, cfg(), resume=True)
    assert [e["epoch"] for e in again.metrics["checkpoints"]] == [1, 2, 3, 4]
    assert weights(again).keys() == weights(res).keys()


def test_epoch_aware_batches_and_parameter_groups(tmp_path):
    """``collate(indices, epoch)`` gets the epoch (a prompt template redrawn per epoch); each
    parameter group trains at its own learning rate (0: unchanged)."""
    epochs: list[int] = []
    kind = toy_kind("epochs")

    def collate(idx, epoch):
        epochs.append(epoch)
        return X_ALL[idx], Y_ALL[idx]

    kind.data = EpochData(len(X_ALL), collate, epochs=2, epoch_aware=True)
    first, last = kind.model[0], kind.model[2]
    before, before_last = first.weight.detach().clone(), last.weight.detach().clone()
    kind.param_groups = lambda: [{"params": list(first.parameters()), "lr": 0.0},
                                 {"params": list(last.parameters()), "lr": 1e-2}]  # fmt: skip
    run(tmp_path / "g", kind, cfg())
    assert sorted(set(epochs)) == [1, 2] and epochs == sorted(epochs)
    assert torch.equal(first.weight.detach(), before)
    assert not torch.equal(last.weight.detach(), before_last)
