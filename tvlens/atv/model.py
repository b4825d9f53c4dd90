"""An ATV: a generator, the frozen target it steers, and how it steers it; forward, loss,
batched prediction, and save / load as safetensors with metadata.

The saved file holds the generator's trainable tensors (the expansion, and the LM's weights
when it was trained) and, as metadata, everything needed to rebuild it: the target (name and
revision), the layers, ``d_model``, λ, the positions and the generator. Loading it against
another target is refused with one line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

import tvlens
from tvlens.atv.data import ATVBatch, GeneratorInput, make_batch
from tvlens.atv.generator import ATVGenerator, Pooling
from tvlens.atv.steering import Positions, steer
from tvlens.errors import CheckpointError, TVLensError
from tvlens.evaluation.icl import answer_correctness
from tvlens.models.loading import load_model
from tvlens.models.tvmodel import TVModel
from tvlens.runs import claim_file
from tvlens.tasks.prompts import ICLPrompt, PaddingSide, tokenize_prompts

WEIGHTS_FILE = "atv.safetensors"


class ATVMismatchError(TVLensError, ValueError):
    """Saved ATV weights loaded against a target (or generator) they were not trained for."""


def model_id(model: TVModel) -> dict[str, Any]:
    """What identifies a model for ATV: its name (a resolved folder for local models) and
    revision, and the sizes a steering vector depends on."""
    s = model.spec
    # hub and short names (smollm2-135m) are names; only folders are resolved to a path
    name = s.name if s.source in ("hub", "pretrained") else str(Path(s.name).expanduser().resolve())
    return {"name": name, "revision": s.revision, "n_layers": s.n_layers, "d_model": s.d_model,
            "d_vocab": s.d_vocab}  # fmt: skip


@dataclass(frozen=True)
class ATVSpec:
    """How an ATV is built and steers (saved as the weights' metadata)."""

    target: dict
    generator: dict
    layers: list[int]
    d_model: int
    scale: float = 1e-3
    positions: str = "all"
    rank: int | None = None
    pooling: str = "last"
    train_generator: bool = True
    generator_stop_at_layer: int | None = None
    generator_input: str = "prompt"
    template: str = "arrow"
    extra: dict = field(default_factory=dict)


class ATV:
    """A generator steering a frozen target. ``atv.generator`` is the trainable module."""

    def __init__(self, target: TVModel, generator: ATVGenerator, spec: ATVSpec):
        self.target, self.generator, self.spec = target, generator, spec
        target.bridge.requires_grad_(False)
        target.bridge.eval()

    @classmethod
    def build(
        cls,
        target: TVModel,
        generator: TVModel,
        layers: Sequence[int] | None = None,
        scale: float = 1e-3,
        positions: Positions = "all",
        rank: int | None = None,
        pooling: Pooling = "last",
        train_generator: bool = True,
        generator_stop_at_layer: int | None = None,
        generator_input: GeneratorInput = "prompt",
        template: str = "arrow",
        seed: int = 0,
    ) -> ATV:
        """A new ATV: ``layers`` of ``target`` (default: all) steered by ``generator``."""
        if generator.bridge is target.bridge:
            raise TVLensError("Load the generator separately from the target (it is trained).")
        if positions not in ("all", "last"):
            raise TVLensError(f"positions must be 'all' or 'last', got {positions!r}.")
        layers = sorted(
            {target.check_layer(x) for x in (range(target.n_layers) if layers is None else layers)}
        )
        gen = ATVGenerator(
            generator, target.d_model, len(layers), rank, pooling, train_generator,
            generator_stop_at_layer, seed,
        )  # fmt: skip
        spec = ATVSpec(
            target=model_id(target), generator=model_id(generator), layers=layers,
            d_model=target.d_model, scale=scale, positions=positions, rank=rank,
            pooling=pooling, train_generator=train_generator,
            generator_stop_at_layer=generator_stop_at_layer, generator_input=generator_input,
            template=template,
        )  # fmt: skip
        return cls(target, gen, spec)

    # ------------------------------------------------------------------ forward
    def batch(self, prompts: Sequence[ICLPrompt], padding_side: PaddingSide = "left") -> ATVBatch:
        return make_batch(
            prompts, self.target, self.generator, self.spec.generator_input, padding_side
        )

    def logits(
        self, batch: ATVBatch, generator: torch.nn.Module | None = None
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """The steered target's logits on ``batch`` (``generator``: the same generator,
        possibly wrapped for distributed training)."""
        gen = generator if generator is not None else self.generator
        vectors = gen(batch.gen_tokens, batch.gen_mask)
        # "last" steers the query (the last prompt token), not the teacher-forced answer.
        pos = batch.query_pos if self.spec.positions == "last" else "all"
        with steer(
            self.target, vectors, self.spec.layers, batch.attention_mask, pos, self.spec.scale
        ):
            return self.target(batch.tokens, attention_mask=batch.attention_mask)

    def loss(self, batch: ATVBatch, generator: torch.nn.Module | None = None) -> Float[Tensor, ""]:
        """Cross-entropy on the answer tokens only."""
        logits = self.logits(batch, generator)
        return F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), batch.labels[:, 1:].flatten(), ignore_index=-100
        )

    @torch.no_grad()
    def correctness(
        self,
        prompts: Sequence[ICLPrompt],
        batch_size: int = 64,
        padding_side: PaddingSide = "left",
    ) -> tuple[np.ndarray, np.ndarray]:
        """(first answer token correct, greedy exact match) per prompt, scored exactly as
        :func:`tvlens.evaluation.icl.answer_correctness` scores any tvlens model."""
        was = self.generator.training
        self.generator.eval()
        firsts, exacts = [], []
        device = self.target.device
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            batch = self.batch(chunk, padding_side).to(device)
            pb = tokenize_prompts(chunk, self.target, padding_side, include_answer=True)
            f, e = answer_correctness(_Steered(self, batch), pb)
            firsts.append(f.numpy())
            exacts.append(e.numpy())
        self.generator.train(was)
        return np.concatenate(firsts), np.concatenate(exacts)

    def trainable_parameters(self) -> int:
        return self.generator.trainable_parameters()

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write the trainable tensors and the spec to ``path`` (a ``.safetensors`` file, or a
        folder that gets ``atv.safetensors``), atomically."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path.mkdir(parents=True, exist_ok=True)
            path = path / WEIGHTS_FILE
        claim_file(path)  # a user's file is never replaced
        spec = asdict(self.spec)
        spec["extra"] = {**spec["extra"], **(extra or {})}
        meta = {"tvlens": tvlens.__version__, "atv_spec": json.dumps(spec)}
        tmp = path.with_name(path.name + ".tmp")
        save_file(self.generator.trainable_state(), str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @staticmethod
    def read_spec(path: str | Path) -> ATVSpec:
        path = _weights_path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:
            raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {e}") from e
        if "atv_spec" not in meta:
            raise CheckpointError(f"{str(path)!r} holds no ATV (no 'atv_spec' metadata).")
        return ATVSpec(**json.loads(meta["atv_spec"]))

    @classmethod
    def load(
        cls,
        path: str | Path,
        target: TVModel | None = None,
        generator: TVModel | None = None,
        device: str | None = None,
    ) -> ATV:
        """Rebuild a saved ATV. ``target`` / ``generator`` default to loading the recorded
        models; a given target must be the one the weights were trained for."""
        path = _weights_path(path)
        spec = cls.read_spec(path)
        t, g = spec.target, spec.generator
        if target is None:
            target = load_model(t["name"], revision=t["revision"], device=device)
        _check_same(target, t, "target", path)
        if generator is None:
            generator = load_model(g["name"], revision=g["revision"], device=device)
        _check_same(generator, g, "generator", path)
        atv = cls.build(
            target, generator, spec.layers, spec.scale, spec.positions, spec.rank,
            spec.pooling, spec.train_generator, spec.generator_stop_at_layer,
            spec.generator_input, spec.template,
        )  # fmt: skip
        atv.spec = spec
        atv.load_weights(path)
        return atv

    def load_weights(self, path: str | Path) -> None:
        """Copy the saved trainable tensors in ``path`` into this ATV's generator (after
        checking that they were trained for this target)."""
        path = _weights_path(path)
        _check_same(self.target, self.read_spec(path).target, "target", path)
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open)
        params = dict(self.generator.named_parameters())
        want = {n for n, p in params.items() if p.requires_grad}
        if set(state) != want:
            raise CheckpointError(
                f"{str(path)!r} does not match the generator it describes "
                f"({len(set(state) ^ want)} tensors differ): the file is corrupt or was "
                "written for another generator."
            )
        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(v)


class _Steered:
    """Looks like a tvlens model to :func:`tvlens.evaluation.icl.answer_correctness`: the target
    steered by the vectors of one fixed batch."""

    def __init__(self, atv: ATV, batch: ATVBatch):
        self.atv, self.batch, self.bridge = atv, batch, atv.target.bridge

    def __call__(self, tokens: Tensor, attention_mask: Tensor) -> Tensor:
        if not torch.equal(tokens, self.batch.tokens):
            raise TVLensError("The steered target was called on other tokens than its batch.")
        return self.atv.logits(self.batch)


def _weights_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"No ATV weights at {str(path)!r}.")
    return path


def _check_same(model: TVModel, recorded: dict, role: str, path: Path) -> None:
    got = model_id(model)
    diff = [k for k in recorded if recorded[k] != got.get(k)]
    if diff:
        k = diff[0]
        raise ATVMismatchError(
            f"The ATV in {str(path)!r} was trained for {role} {recorded['name']!r}"
            + (f" (revision {recorded['revision']})" if recorded.get("revision") else "")
            + f", but the {role} given differs in {k} ({got.get(k)!r} instead of "
            f"{recorded[k]!r}): load it with that {role}, or train a new ATV."
        )
