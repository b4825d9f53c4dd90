"""Task families: one typed interface (:class:`TaskFamily`) over the two kinds of task the seed
paper's experiments (Han et al. 2025) run on — token suites (latent mappings...) and the
sparse-linear-regression mixture.

A family knows how to load a checkpoint, sample prompts of a task (or of the Null task) and run
them once, returning the residual after every block at the last query token and the loss (and
accuracy) on the query's answer; and, for fine-tuning, how to load a checkpoint as a trainable
module and compute a training loss on it. Emergence (:mod:`tvlens.probing.emergence`),
perturbation (:mod:`tvlens.probing.perturbation`) and fine-tuning call only this interface, so
a new family is one class here (and one entry in :data:`FAMILIES` for its runs' config).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from tvlens.errors import CheckpointError, ConfigError, EmptyTaskError, TVLensError
from tvlens.extraction.residual import activations_at_positions
from tvlens.models import adapter
from tvlens.models.hf import quiet_transformers
from tvlens.models.loading import doc_start_token, load_model
from tvlens.models.regression import READ_IN_FILE, ReadInOutModel, load_regression_model
from tvlens.models.tvmodel import TVModel
from tvlens.runs.checkpoints import is_run_dir, write_atomically
from tvlens.tasks.core import TaskSuite
from tvlens.tasks.prompts import sample_prompts, tokenize_prompts
from tvlens.tasks.registry import get_suite
from tvlens.tasks.regression import RegressionMixture, query_tokens, regression_batch
from tvlens.tasks.synthetic import null_task
from tvlens.training.checkpointing import write_hf_folder
from tvlens.training.data import ICLBatcher
from tvlens.training.regression import regression_loss
from tvlens.training.train import icl_loss

NULL = "null"


@dataclass
class RunOutput:
    """One task's prompts run once: residual after every block at the last query token, the
    mean loss on the query's answer, and accuracy (None for families without one)."""

    hidden: Float[Tensor, "layer n d_model"]
    loss: float
    accuracy: float | None


@dataclass
class Trainable:
    """A checkpoint loaded as a module to fine-tune. ``module`` computes the family's loss;
    ``hf`` is the HF model inside it (``module`` itself for token models, ``module.hf`` for the
    regression read-in/read-out model), settable so that peft can wrap and unwrap it;
    :meth:`save` writes a folder that the family's ``load`` reads."""

    module: nn.Module
    tokenizer: Any
    info: dict  # the folder's tvlens.json
    wraps_hf: bool = False
    extra_files: list[Path] = field(default_factory=list)  # copied unchanged (read-in weights)
    # The first token of every training prompt: the base model's BOS policy
    # (TVModel.prompt_bos_id); None: the tokenizer's BOS token.
    bos_id: int | None = None

    @property
    def hf(self) -> nn.Module:
        return self.module.hf if self.wraps_hf else self.module

    @hf.setter
    def hf(self, hf: nn.Module) -> None:
        if self.wraps_hf:
            self.module.hf = hf
        else:
            self.module = hf

    def save(self, folder: Path) -> None:

        def write(tmp: Path) -> None:
            write_hf_folder(tmp, self.hf, self.tokenizer, self.info)
            for f in self.extra_files:
                shutil.copy(f, tmp / f.name)

        write_atomically(folder, write)


@runtime_checkable
class TaskFamily(Protocol):
    """What the experiments need from a task family."""

    kind: str  # recorded in results ("tokens", "regression")
    has_accuracy: bool  # whether ``run`` reports accuracy (else only the loss)

    @property
    def task_names(self) -> list[str]: ...

    def describe(self) -> dict:
        """JSON-ready description, written into results' config."""
        ...

    def load(self, run: str | Path, revision: str | int | None = None, device: str | None = None):
        """A checkpoint of ``run`` as the model object :meth:`run` takes."""
        ...

    def tvmodel(self, model: Any) -> TVModel:
        """The hookable :class:`TVModel` of a model from :meth:`load`."""
        ...

    def run(self, model: Any, task: str, n: int, seed: int) -> RunOutput:
        """``n`` prompts of ``task`` (or :data:`NULL`) run once. Hooks the caller holds on
        :meth:`tvmodel` (e.g. :func:`tvlens.injection.inject`) stay active."""
        ...

    def trainable(self, checkpoint: Path) -> Trainable:
        """The checkpoint folder as a :class:`Trainable` (float32, on the CPU)."""
        ...

    def train_batch(
        self, trainable: Trainable, step: int, batch_size: int, seed: int, micro: int = 0
    ) -> Any:
        """Micro-batch ``micro`` of training step ``step``, a function of ``(step, seed,
        micro)`` only (so a resumed run draws the same batches)."""
        ...

    def train_loss(self, module: nn.Module, batch: Any) -> Float[Tensor, ""]:
        """The training loss of ``module`` (a :class:`Trainable`'s) on a batch from
        :meth:`train_batch`: every answer / every ``y`` is trained."""
        ...


def _load_hf_checkpoint(ckpt: Path) -> tuple[nn.Module, Any, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        hf = AutoModelForCausalLM.from_pretrained(ckpt)
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    # A model tvlens did not train (a pretrained folder) has no tvlens.json: record where it
    # came from and its document-start token, which the tuned folder's prompts start with.
    info_file = ckpt / "tvlens.json"
    if info_file.is_file():
        return hf, tokenizer, json.loads(info_file.read_text())
    return hf, tokenizer, {"source": str(ckpt), "doc_start": doc_start_token(str(ckpt))}


class TokenFamily:
    """A token task suite (``latent``, ``bitwise``...), ``k`` demonstrations per prompt."""

    kind = "tokens"
    has_accuracy = True

    def __init__(self, suite: TaskSuite, k: int = 5, template: str = "arrow", batch_size: int = 64):
        if len(list(suite)) == 0:
            raise EmptyTaskError("The suite has no tasks.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        self.suite, self.k, self.template, self.batch_size = suite, k, template, batch_size
        self._tasks = {t.name: t for t in suite}
        self._tasks[NULL] = null_task(suite)
        self._batcher = None  # training batches, built with the first trainable's tokenizer

    @classmethod
    def from_run_config(cls, cfg: dict, **kwargs: Any) -> TokenFamily:

        c = cfg["config"]
        return cls(get_suite(**c["suite"]), k=c["k"], template=c["template"], **kwargs)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.suite]

    def describe(self) -> dict:
        return {"kind": self.kind, "suite": self.suite.spec, "k": self.k, "template": self.template}

    def load(self, run: str | Path, revision: str | int | None = None, device: str | None = None):
        return load_model(run, revision=revision, device=device or "cpu")

    def tvmodel(self, model: TVModel) -> TVModel:
        return model

    @torch.no_grad()
    def run(self, model: TVModel, task: str, n: int, seed: int) -> RunOutput:
        if task not in self._tasks:
            raise EmptyTaskError(f"Unknown task {task!r}; tasks: {list(self._tasks)}.")
        prompts = sample_prompts(self._tasks[task], self.k, n, seed=seed, template=self.template)
        names = model.resid_hooks("post")
        hidden, losses, correct = [], [], []
        for start in range(0, n, self.batch_size):
            batch = tokenize_prompts(
                prompts[start : start + self.batch_size], model, padding_side="left"
            )
            logits: dict[str, Tensor] = {}
            # the query's next-token logits
            keep_logits = adapter.keeper(logits, "q", lambda a: a[:, -1])
            with model.hooks(fwd_hooks=[("unembed.hook_out", keep_logits)]):
                acts = activations_at_positions(model, batch, names)
            hidden.append(torch.stack([acts[nm] for nm in names]))
            q = logits["q"].float()
            ans = batch.answer_first.to(q.device)
            losses.append(F.cross_entropy(q, ans, reduction="none").cpu())
            correct.append((q.argmax(-1) == ans).float().cpu())
        return RunOutput(
            torch.cat(hidden, dim=1).cpu(),
            float(torch.cat(losses).mean()),
            float(torch.cat(correct).mean()),
        )

    def trainable(self, checkpoint: Path) -> Trainable:
        hf, tokenizer, info = _load_hf_checkpoint(checkpoint)
        info = {**info, "suite": self.suite.spec, "finetuned_from": str(checkpoint)}
        return Trainable(hf, tokenizer, info)

    def train_batch(
        self, trainable: Trainable, step: int, batch_size: int, seed: int, micro: int = 0
    ) -> Any:

        if self._batcher is None:
            self._batcher = ICLBatcher(
                self.suite, trainable.tokenizer, self.k, self.template, bos_id=trainable.bos_id
            )
        return self._batcher.batch(step, batch_size, seed, micro)

    def train_loss(self, module: nn.Module, batch: Any) -> Float[Tensor, ""]:

        return icl_loss(module, batch)


class RegressionFamily:
    """The sparse-linear-regression mixture; a prompt has ``n_points`` pairs, the last ``y``
    is the query's answer (MSE; no accuracy)."""

    kind = "regression"
    has_accuracy = False

    def __init__(self, mixture, n_points: int = 20, batch_size: int = 256):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        self.mixture, self.n_points, self.batch_size = mixture, n_points, batch_size

    @classmethod
    def from_run_config(cls, cfg: dict, **kwargs: Any) -> RegressionFamily:

        return cls(
            RegressionMixture(**cfg["mixture"]), n_points=cfg["config"]["n_points"], **kwargs
        )

    @property
    def task_names(self) -> list[str]:
        return self.mixture.names

    def describe(self) -> dict:
        return {"kind": self.kind, "mixture": self.mixture.to_dict(), "n_points": self.n_points}

    def load(self, run: str | Path, revision: str | int | None = None, device: str | None = None):

        return load_regression_model(run, revision=revision, device=device)

    def tvmodel(self, model) -> TVModel:
        return model.tvmodel

    @torch.no_grad()
    def run(self, model, task: str, n: int, seed: int) -> RunOutput:

        x, y, w = self.mixture.sample(task, n, self.n_points, seed=seed)
        tokens = query_tokens(x, y)  # ends at the last query x_p
        tv = model.tvmodel
        names = tv.resid_hooks("post")
        store: dict[str, Tensor] = {}
        with tv.hooks(fwd_hooks=adapter.keepers(store, names, lambda a: a[:, -1])):
            pred = model.predict(tokens)[:, -1].cpu()
        hidden = torch.stack([store[nm] for nm in names]).cpu()
        # Normalised MSE: squared error over E[y_q^2 | w] = |w|^2 + noise^2 (rank for the Null
        # task), summed over prompts. 1 = predicting 0; removes most of the sampling noise of
        # |w|^2, so tasks and checkpoints compare.
        m = self.mixture
        expected = (w**2).sum(-1) + m.noise_std**2 if task != NULL else torch.full((n,), m.rank)
        return RunOutput(hidden, float(((pred - y[:, -1]) ** 2).sum() / expected.sum()), None)

    def trainable(self, checkpoint: Path) -> Trainable:
        from safetensors.torch import load_file

        hf, tokenizer, info = _load_hf_checkpoint(checkpoint)
        module = ReadInOutModel(hf, self.mixture.d_in, hf.config.hidden_size)
        module.read_in.load_state_dict(load_file(str(checkpoint / READ_IN_FILE)))
        info = {**info, "mixture": self.mixture.to_dict(), "finetuned_from": str(checkpoint)}
        # The read-in is not tuned: its file is copied as it is.
        return Trainable(module, tokenizer, info, True, [checkpoint / READ_IN_FILE])

    def train_batch(
        self, trainable: Trainable, step: int, batch_size: int, seed: int, micro: int = 0
    ) -> Any:

        return regression_batch(self.mixture, step, batch_size, self.n_points, seed, micro)[:2]

    def train_loss(self, module: nn.Module, batch: Any) -> Float[Tensor, ""]:

        return regression_loss(module, batch)


# A run's config.json "family" -> how to build its family (token runs have no "family" key).
FAMILIES: dict[str, Callable[..., TaskFamily]] = {
    "tokens": TokenFamily.from_run_config,
    "regression": RegressionFamily.from_run_config,
}


def _run_config(run: str | Path) -> dict | None:
    path = Path(run) / "config.json"
    if not is_run_dir(run):
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None


def family_for_run(run: str | Path, **kwargs: Any) -> TaskFamily:
    """The family a tvlens run was trained on (from its ``config.json``)."""
    path = Path(run) / "config.json"
    if not is_run_dir(run):
        raise CheckpointError(
            f"{str(run)!r} is not a tvlens training run (no config.json with a checkpoints/ "
            "folder): give a folder written by `tvlens train-synthetic` or `train-regression`."
        )
    cfg = json.loads(path.read_text())
    kind = cfg.get("family", "tokens")
    if kind not in FAMILIES:
        raise TVLensError(
            f"{str(run)!r} has an unknown task family {kind!r}; known: {list(FAMILIES)}."
        )
    return FAMILIES[kind](cfg, **kwargs)


def is_regression_run(path: str | Path) -> bool:
    """A tvlens run of the sparse-linear-regression family (``tvlens train-regression``)."""
    cfg = _run_config(path)
    return cfg is not None and cfg.get("family") == "regression"
