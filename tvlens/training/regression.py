"""The seed paper's continuous task family (Han et al. 2025): a mixture of sparse linear
regressions, and a transformer that reads vectors in and out, trained with tvlens's checkpoint
conventions and hookable through ``TransformerBridge``.

Task ``t`` draws ``w = B_t z`` (``B_t``: a rank-``rank`` orthonormal basis of R^d_in,
``z ~ N(0, I_rank)``), then ``x_i ~ N(0, I)`` and ``y_i = wᵀx_i + ε``. A prompt is the sequence
``x_1, y_1, x_2, y_2, ...`` (Garg et al. 2022), ``y`` embedded as ``[y, 0, ..., 0]``; the model
predicts ``y_i`` at the ``x_i`` position (MSE). The Null task draws ``y`` independently of ``x``.

The model is an HF Llama (rotary positions: nothing is added to the input before block 0, so the
read-in output *is* the residual entering block 0) with ``vocab_size=1``: its ``lm_head`` is the
read-out ``d_model -> 1``. The read-in ``d_in -> d_model`` is saved with safetensors beside the
HF folder. Through the bridge, ``bridge(read_in(tokens), start_at_layer=0)`` runs the same
computation, so every hook, :func:`tvlens.injection.inject` and TD work on it.

Run folder (as :mod:`tvlens.training.train`)::

    OUT/config.json   {"tvlens", "family": "regression", "preset", "config"}
    OUT/metrics.json  {"checkpoints": [{"step", "loss", "task_loss": {task: mse}, ...}]}
    OUT/checkpoints/step-NNNNNNNNN/  HF folder + tokenizer + tvlens.json + read_in.safetensors
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import einops
import numpy as np
import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

import tvlens
from tvlens.errors import CheckpointError, EmptyTaskError, TVLensError
from tvlens.models.checkpoints import (
    Checkpoint,
    list_checkpoints,
    write_json_atomically,
)
from tvlens.models.hf import build_hf_model
from tvlens.models.loading import TVModel, default_device, load_model
from tvlens.models.tokenizer import build_word_tokenizer
from tvlens.training.config import RunConfig, checkpoint_steps
from tvlens.training.train import (
    check_run_folder,
    optimizer_step,
    restore_run,
    save_checkpoint,
)

READ_IN_FILE = "read_in.safetensors"
NULL = "null"


# ---------------------------------------------------------------------------- the task family


@dataclass(frozen=True)
class RegressionMixture:
    """``n_tasks`` rank-``rank`` bases of R^``d_in``: orthogonal to each other, or (with
    ``overlap > 0``) consecutive bases sharing ``overlap`` directions, cyclically."""

    d_in: int = 16
    n_tasks: int = 4
    rank: int = 4
    overlap: int = 0
    noise_std: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rank < 1 or self.n_tasks < 1:
            raise TVLensError("RegressionMixture needs rank >= 1 and n_tasks >= 1.")
        if not 0 <= self.overlap < self.rank:
            raise TVLensError(f"overlap must be in 0..{self.rank - 1}, got {self.overlap}.")
        need = self.n_dirs
        if need > self.d_in:
            raise TVLensError(
                f"{self.n_tasks} bases of rank {self.rank} (overlap {self.overlap}) need "
                f"{need} directions, more than d_in={self.d_in}."
            )

    @property
    def n_dirs(self) -> int:
        """Orthonormal directions used in all: bases are windows of ``rank`` of them."""
        if self.overlap == 0:
            return self.n_tasks * self.rank
        # cyclic windows advancing by rank - overlap
        return self.n_tasks * (self.rank - self.overlap)

    @property
    def names(self) -> list[str]:
        return [f"basis_{t}" for t in range(self.n_tasks)]

    def to_dict(self) -> dict:
        return asdict(self)

    def bases(self) -> Float[Tensor, "task d_in rank"]:
        """Each task's orthonormal basis: windows of the columns of a seeded random rotation."""
        g = torch.Generator().manual_seed(self.seed)
        q, _ = torch.linalg.qr(torch.randn(self.d_in, self.d_in, generator=g, dtype=torch.float64))
        step = self.rank - self.overlap
        cols = [
            [(t * step + j) % self.n_dirs for j in range(self.rank)] for t in range(self.n_tasks)
        ]
        return torch.stack([q[:, c] for c in cols]).float()

    def sample(
        self, task: int | str, n: int, n_points: int, seed: int
    ) -> tuple[Float[Tensor, "n points d_in"], Float[Tensor, "n points"], Float[Tensor, "n d_in"]]:
        """``n`` prompts of ``n_points`` pairs of task ``task`` (an index, a name, or
        ``"null"``): ``x``, ``y`` and the weight vectors ``w`` (zeros for the Null task)."""
        if n < 1 or n_points < 1:
            raise EmptyTaskError(f"Need n >= 1 prompts and n_points >= 1, got {n}, {n_points}.")
        g = torch.Generator().manual_seed(int(seed))
        x = torch.randn(n, n_points, self.d_in, generator=g)
        if task == NULL:
            # Same marginal variance as a real task (E[y^2] = rank), no dependence on x.
            w = torch.zeros(n, self.d_in)
            y = torch.randn(n, n_points, generator=g) * math.sqrt(self.rank)
            return x, y, w
        t = self.task_index(task)
        z = torch.randn(n, self.rank, generator=g)
        w = einops.einsum(self.bases()[t], z, "d r, n r -> n d")
        y = einops.einsum(x, w, "n p d, n d -> n p")
        if self.noise_std > 0:
            y = y + self.noise_std * torch.randn(n, n_points, generator=g)
        return x, y, w

    def task_index(self, task: int | str) -> int:
        if isinstance(task, str):
            if task not in self.names:
                raise EmptyTaskError(f"Unknown task {task!r}; tasks: {self.names + [NULL]}.")
            return self.names.index(task)
        if not 0 <= int(task) < self.n_tasks:
            raise EmptyTaskError(f"Task index {task} out of range 0..{self.n_tasks - 1}.")
        return int(task)


MIXTURES: dict[str, RegressionMixture] = {
    "orthogonal4": RegressionMixture(d_in=16, n_tasks=4, rank=4),
    "orthogonal6": RegressionMixture(d_in=24, n_tasks=6, rank=4),
    "overlapping8": RegressionMixture(d_in=16, n_tasks=8, rank=4, overlap=2),
    # The CPU preset's mixture: 4 orthogonal bases as above, at half the size (rank 2 in 8
    # dims). At full size a CPU-sized model stays on the predict-0 plateau for > 4700 steps.
    "orthogonal4-small": RegressionMixture(d_in=8, n_tasks=4, rank=2),
}


def interleave(
    x: Float[Tensor, "n points d_in"], y: Float[Tensor, "n points"]
) -> Float[Tensor, "n seq d_in"]:
    """The token sequence ``x_1, [y_1, 0...], x_2, ...`` (length ``2 * points``)."""
    y_tok = torch.zeros_like(x)
    y_tok[..., 0] = y
    return einops.rearrange(torch.stack([x, y_tok], dim=2), "n p two d -> n (p two) d")


def query_tokens(
    x: Float[Tensor, "n points d_in"], y: Float[Tensor, "n points"]
) -> Float[Tensor, "n seq d_in"]:
    """The prompt ending at the last query ``x_p`` (its ``y_p`` is what is predicted)."""
    return interleave(x, y)[:, :-1]


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RegressionConfig(RunConfig):
    """Everything that determines a regression training run (saved as ``config.json``)."""

    _kind = "regression"

    mixture: str | dict = "orthogonal4"
    noise_std: float = 0.1
    n_points: int = 20
    # model: "gpt2" (learned absolute positions: a token knows whether it is an x or a y, as
    # in Garg et al.) or "llama" (rotary; only relative positions)
    arch: str = "gpt2"
    # GPT-2 initialises positions with std 0.02, tiny next to the read-in's output: the model
    # then barely tells x tokens from y tokens at first and sits on the predict-0 plateau for
    # longer. A larger init makes the token type visible from step 0.
    pos_init_std: float = 0.5
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int | None = 512
    # optimisation
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    # checkpoints and evaluation
    n_checkpoints: int = 24
    first_checkpoint: int = 10
    eval_prompts: int = 128
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise TVLensError(f"steps must be >= 1, got {self.steps}.")
        if self.arch not in ("gpt2", "llama"):
            raise TVLensError(f"arch must be 'gpt2' or 'llama', got {self.arch!r}.")
        if self.n_points < 2:
            raise TVLensError(
                f"n_points must be >= 2 (a demonstration and a query), got {self.n_points}."
            )

    def get_mixture(self) -> RegressionMixture:
        base = MIXTURES[self.mixture] if isinstance(self.mixture, str) else None
        if isinstance(self.mixture, str) and base is None:
            raise TVLensError(f"Unknown mixture {self.mixture!r}; use one of {sorted(MIXTURES)}.")
        if base is None:
            base = RegressionMixture(**self.mixture)
        return replace(base, noise_std=self.noise_std)

    # checkpoint_steps reads these like a TrainConfig
    @property
    def n_ctx(self) -> int:
        return 2 * self.n_points


REGRESSION_PRESETS: dict[str, RegressionConfig] = {
    # Seconds: tests and the notebook's fast path.
    "tiny": RegressionConfig(
        n_points=8,
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_mlp=64,
        steps=120,
        batch_size=32,
        lr=3e-3,
        warmup_steps=10,
        n_checkpoints=4,
        eval_prompts=32,
    ),
    # CPU-sized (see the README for the measured curve): the half-size mixture, a 3-layer
    # Llama (rotary positions make the previous-token step of the x -> y lookup easy; GPT-2
    # and Llama both sat on the plateau longer at full size).
    "cpu": RegressionConfig(
        mixture="orthogonal4-small",
        arch="llama",
        n_points=10,
        n_layers=3,
        d_model=64,
        n_heads=4,
        d_mlp=256,
        steps=20000,
        batch_size=64,
        lr=1e-3,
        n_checkpoints=30,
    ),
    # Han et al. 2025 / Garg et al. 2022: 12 layers, 8 heads, d_model 256, batch 128, Adam
    # lr 1e-4. For a GPU.
    "paper": RegressionConfig(
        n_layers=12,
        d_model=256,
        n_heads=8,
        d_mlp=1024,
        steps=50000,
        batch_size=128,
        lr=1e-4,
        warmup_steps=0,
        n_checkpoints=40,
        eval_prompts=256,
        log_every=100,
    ),
}


def get_regression_preset(name: str) -> RegressionConfig:
    if name not in REGRESSION_PRESETS:
        raise TVLensError(
            f"Unknown regression preset {name!r}; use one of {sorted(REGRESSION_PRESETS)}."
        )
    return REGRESSION_PRESETS[name]


# ---------------------------------------------------------------------------- the model


class ReadInOutModel(nn.Module):
    """Read-in ``d_in -> d_model``, an HF Llama over ``inputs_embeds``, read-out = its
    ``lm_head`` (vocab 1). What is trained; :class:`RegressionModel` is the loaded view."""

    def __init__(self, hf: nn.Module, d_in: int, d_model: int, seed: int = 0):
        super().__init__()
        self.hf = hf
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.read_in = nn.Linear(d_in, d_model)

    def forward(self, tokens: Float[Tensor, "n seq d_in"]) -> Float[Tensor, "n seq"]:
        return self.hf(inputs_embeds=self.read_in(tokens)).logits[..., 0]


def build_regression_model(cfg: RegressionConfig, device: str = "cpu") -> ReadInOutModel:
    hf = build_hf_model(
        cfg.arch,
        1,
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        n_ctx=cfg.n_ctx,
        d_mlp=cfg.d_mlp,
        seed=cfg.seed,
        bos_token_id=0,
        pad_token_id=0,
    )
    return ReadInOutModel(hf, cfg.get_mixture().d_in, cfg.d_model, seed=cfg.seed).to(device)


class RegressionModel:
    """A regression checkpoint loaded through ``TransformerBridge``: ``tvmodel`` (the bridge,
    hooks, :func:`inject`) plus the read-in. ``predict`` runs
    ``bridge(read_in(tokens), start_at_layer=0)``."""

    def __init__(self, tvmodel: TVModel, read_in: nn.Linear, mixture: RegressionMixture):
        self.tvmodel = tvmodel
        self.read_in = read_in.to(tvmodel.device)
        self.mixture = mixture

    @property
    def n_layers(self) -> int:
        return self.tvmodel.n_layers

    @property
    def d_model(self) -> int:
        return self.tvmodel.d_model

    @property
    def spec(self):
        return self.tvmodel.spec

    def embed(self, tokens: Float[Tensor, "n seq d_in"]) -> Float[Tensor, "n seq d_model"]:
        """The residual entering block 0: the read-in, plus GPT-2's learned positions (HF adds
        them to ``inputs_embeds`` before block 0; ``start_at_layer=0`` starts after that)."""
        h = self.read_in(tokens.to(self.tvmodel.device))
        wpe = getattr(getattr(self.tvmodel.bridge.original_model, "transformer", None), "wpe", None)
        if wpe is not None:
            h = h + wpe(torch.arange(h.shape[1], device=h.device))
        return h

    def predict(self, tokens: Float[Tensor, "n seq d_in"], **kwargs: Any) -> Float[Tensor, "n seq"]:
        """The prediction at every position (at ``x_i``: the model's ``ŷ_i``)."""
        out = self.tvmodel.bridge(self.embed(tokens), start_at_layer=0, **kwargs)
        return out[..., 0]


def load_regression_model(
    run_or_folder: str | Path, revision: str | int | None = None, device: str | None = None
) -> RegressionModel:
    """Load a regression checkpoint (a run and revision, or a checkpoint folder)."""
    tv = load_model(run_or_folder, revision=revision, device=device or "cpu")
    info = tv.spec.train_info
    if info.get("family") != "regression":
        raise TVLensError(f"{str(run_or_folder)!r} is not a regression model (no family record).")
    folder = Path(tv.spec.path)
    if not (folder / READ_IN_FILE).is_file():
        raise CheckpointError(f"{str(folder)!r} has no {READ_IN_FILE}.")
    mix = RegressionMixture(**info["mixture"])
    lin = nn.Linear(mix.d_in, tv.d_model)
    lin.load_state_dict(load_file(str(folder / READ_IN_FILE)))
    return RegressionModel(tv, lin.eval(), mix)


# ---------------------------------------------------------------------------- training


def regression_batch(
    mix: RegressionMixture, step: int, batch_size: int, n_points: int, seed: int
) -> tuple[Float[Tensor, "n seq d_in"], Float[Tensor, "n points"], Int[Tensor, " n"]]:
    """Training batch ``step``: a function of the step alone (resume is exact). Tasks are
    drawn uniformly per row."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    tidx = torch.randint(mix.n_tasks, (batch_size,), generator=g)
    x = torch.randn(batch_size, n_points, mix.d_in, generator=g)
    z = torch.randn(batch_size, mix.rank, generator=g)
    w = einops.einsum(mix.bases()[tidx], z, "n d r, n r -> n d")
    y = einops.einsum(x, w, "n p d, n d -> n p")
    if mix.noise_std > 0:
        y = y + mix.noise_std * torch.randn(batch_size, n_points, generator=g)
    return interleave(x, y), y, tidx


def predictions_at_x(pred: Float[Tensor, "n seq"]) -> Float[Tensor, "n points"]:
    """The predictions made at the x positions (even indices)."""
    return pred[:, 0::2]


@torch.no_grad()
def evaluate_regression(
    model: ReadInOutModel | RegressionModel,
    mix: RegressionMixture,
    n_prompts: int,
    n_points: int,
    seed: int,
) -> dict[str, Any]:
    """MSE per task over all predicted points and at the last query, and the MSE by
    position (averaged over tasks). Baseline: predicting 0 gives ``rank`` (+ noise)."""
    task_loss, query_loss, query_nmse, by_pos = {}, {}, {}, []
    was = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    for t, name in enumerate(mix.names):
        x, y, w = mix.sample(t, n_prompts, n_points, seed=seed + 7919 * t)
        tokens = interleave(x, y)
        pred = model.predict(tokens) if isinstance(model, RegressionModel) else model(tokens)
        err = (predictions_at_x(pred).cpu() - y) ** 2
        task_loss[name] = float(err.mean())
        query_loss[name] = float(err[:, -1].mean())
        # Normalised by E[y_q^2 | w]: 1 = predicting 0, comparable across tasks.
        query_nmse[name] = float(err[:, -1].sum() / ((w**2).sum(-1) + mix.noise_std**2).sum())
        by_pos.append(err.mean(0))
    if isinstance(model, nn.Module):
        model.train(was)
    return {
        "loss": float(np.mean(list(task_loss.values()))),
        "task_loss": task_loss,
        "query_loss": query_loss,
        "query_nmse": query_nmse,
        "mse_by_position": [float(v) for v in torch.stack(by_pos).mean(0)],
    }


@dataclass
class RegressionTrainResult:
    run_dir: Path
    config: RegressionConfig
    checkpoints: list[Checkpoint]
    metrics: dict
    completed: bool
    seconds: float


def _save(
    run_dir: Path,
    step: int,
    model: ReadInOutModel,
    tokenizer,
    optimizer,
    scheduler,
    cfg: RegressionConfig,
    preset: str | None,
) -> Checkpoint:
    """A regression checkpoint: the token family's checkpoint plus the read-in weights."""
    info = {
        "family": "regression",
        "preset": preset,
        "mixture": cfg.get_mixture().to_dict(),
        "n_points": cfg.n_points,
        "arch": cfg.arch,
    }

    def read_in(folder: Path) -> None:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.read_in.state_dict().items()}
        save_file(weights, str(folder / READ_IN_FILE))

    return save_checkpoint(
        run_dir, step, model.hf, tokenizer, optimizer, scheduler, info, extra=read_in
    )


def train_regression(
    out: str | Path,
    preset: str = "cpu",
    config: RegressionConfig | None = None,
    resume: bool = False,
    device: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    **overrides: Any,
) -> RegressionTrainResult:
    """Train a read-in/read-out Llama on the regression mixture; same folder layout,
    atomic checkpoints at log-spaced steps and exact resume as :func:`train_synthetic`."""

    t0 = time.time()
    run_dir = Path(out)
    cfg = (config or get_regression_preset(preset)).with_overrides(**overrides)
    preset_name = None if config is not None else preset
    mix = cfg.get_mixture()
    existing = check_run_folder(run_dir, cfg.to_dict(), resume)
    device = device or default_device()
    torch.manual_seed(cfg.seed)
    tokenizer = build_word_tokenizer([])  # the bridge wants one; inputs are vectors
    model = build_regression_model(cfg, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1))
    )
    metrics: dict[str, Any] = {"checkpoints": [], "train_loss": []}
    start_step = 0
    if existing is not None:

        def load_weights(ckpt: Path) -> None:
            weights = load_file(str(ckpt / "model.safetensors"), device=str(device))
            model.hf.load_state_dict(weights, strict=False)
            if hasattr(model.hf, "tie_weights"):  # GPT-2's lm_head is tied, not saved
                model.hf.tie_weights()
            model.read_in.load_state_dict(load_file(str(ckpt / READ_IN_FILE), device=str(device)))

        start_step, metrics = restore_run(
            run_dir, load_weights, optimizer, scheduler, device, metrics
        )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomically(
            run_dir / "config.json",
            {
                "tvlens": tvlens.__version__,
                "family": "regression",
                "preset": preset_name,
                "config": cfg.to_dict(),
                "mixture": mix.to_dict(),
                "device": str(device),
            },
        )
    save_at = set(checkpoint_steps(cfg))
    model.train()
    bar = tqdm(
        range(start_step + 1, cfg.steps + 1),
        initial=start_step,
        total=cfg.steps,
        desc=f"train {run_dir.name}",
        disable=not progress,
    )
    running: list[float] = []
    completed = True
    for step in bar:
        tokens, y, _ = regression_batch(mix, step, cfg.batch_size, cfg.n_points, cfg.seed)
        pred = predictions_at_x(model(tokens.to(device)))
        loss = torch.nn.functional.mse_loss(pred, y.to(device))
        running.append(optimizer_step(model, loss, optimizer, scheduler, cfg.grad_clip, step))
        if step % cfg.log_every == 0:
            metrics["train_loss"].append([step, float(np.mean(running))])
            running = []
        if step in save_at:
            ev = evaluate_regression(model, mix, cfg.eval_prompts, cfg.n_points, seed=10_000_019)
            metrics["checkpoints"].append({"step": step, **ev})
            _save(run_dir, step, model, tokenizer, optimizer, scheduler, cfg, preset_name)
            write_json_atomically(run_dir / "metrics.json", metrics)
            bar.set_postfix(mse=f"{ev['loss']:.3f}")
        if stop_after is not None and step >= stop_after and step < cfg.steps:
            completed = False
            break
    bar.close()
    return RegressionTrainResult(
        run_dir, cfg, list_checkpoints(run_dir), metrics, completed, time.time() - t0
    )
