"""Implicit in-context learning (I2CL): Li, Xie, Wei, Yao and Zhu, "Implicit In-context
Learning", ICLR 2025 (arXiv:2405.14660; official code LzVv123456/I2CL).

What the official code does (``run_i2cl.py``, ``wrapper.py``, ``configs/config_i2cl.py``), and
this module mirrors:

1. **Context vectors.** Each demonstration (``input + ' ' + answer + separator``, one per
   forward pass: ``split_demon=True``) is run alone; at its last token the output of every
   layer's attention module and MLP module is read; the context vector of each
   (layer, module) is the mean over demonstrations (``post_fuse_method='mean'``).
2. **Injection.** At every layer and every position of the query, the module's output
   becomes ``c_keep·h + c_ctx·v`` (``inject_method='linear'``, ``inject_pos='all'``): the
   ``mix`` op of :mod:`tvlens.injection.intervention` at ``mlp_module`` / ``attn_module``.
3. **Calibration.** The coefficients ``[layer, module (mlp, attn), (c_ctx, c_keep)]`` start at
   ``(0.1, 1.0)`` and are trained by AdamW (lr 0.01, weight decay 1e-3), 100 epochs of
   ``len(demos) // 2`` steps of 2 examples (each step a fresh shuffle, its first two), with
   a linear warm-up over 5% of the epochs then a cosine, on the cross-entropy of the
   answer's first token at the last position of the *demonstrations themselves* asked as
   zero-shot queries; while training, each injected output gets Gaussian noise of
   0.001 × its norm.

Seeds: the official code seeds the global numpy and torch generators; here a
``numpy.random.RandomState(seed)`` draws the batches and a ``torch.Generator`` seeded with
``seed`` the noise (the same streams, without touching the global state).

Differences (docs/guides/methods_icv_i2cl.md): prompts start with the model's BOS policy;
demonstrations and queries are written in the tvlens template (the official code writes
``Review: ...\\nSentiment: label``); the answer token is the first token of the answer as
tokenized in context (the official code prepends a space for GPT tokenizers only); the
warm-up is at least one step (the official schedule divides by zero below 10 epochs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tvlens.errors import ConfigError
from tvlens.extraction import defaults as D
from tvlens.extraction.icv import last_token_activations, sample_demonstrations, token_rows
from tvlens.extraction.writes import Intervention, Write
from tvlens.models.tvmodel import TVModel
from tvlens.tasks.core import Example, Task
from tvlens.tasks.prompts import (
    ICLPrompt,
    PromptBatch,
    PromptTemplate,
    get_template,
    tokenize_prompts,
)

# The official ``config['module'] = ['mlp', 'attn']``: coefficient index 0 is the MLP.
MODULES = ("mlp", "attn")
POINT = {"mlp": "mlp_module", "attn": "attn_module"}


def module_hook(model: TVModel, layer: int, module: str) -> str:
    """The hook of the module's own output (what the official code hooks on the HF module)."""
    if module == "attn":
        return model.attn_module_hook(layer)
    return f"blocks.{model.check_layer(layer)}.mlp.hook_out"


def context_vectors(
    model: TVModel,
    demos: Sequence[Example],
    template: str | PromptTemplate | None = None,
    batch_size: int = 64,
) -> Float[Tensor, "layer module d_model"]:
    """Per layer and module (``MODULES``), the mean over demonstrations of the module's output
    at each demonstration's last token, each demonstration run alone."""
    tmpl = get_template(model.template(template))
    texts = [tmpl.demo.format(x=d.input, y=d.output) + tmpl.separator for d in demos]
    names = [module_hook(model, layer, m) for layer in range(model.n_layers) for m in MODULES]
    acts = last_token_activations(model, token_rows(model, texts), names, batch_size)
    means = torch.stack([acts[n].mean(0) for n in names])
    return means.reshape(model.n_layers, len(MODULES), model.d_model).to(model.dtype)


def mix_hooks(
    model: TVModel,
    context: Float[Tensor, "layer module d_model"],
    coef: Tensor,
    noise_scale: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[tuple[str, Any]]:
    """Training-time hooks: ``h ← coef[l, m, 1]·h + coef[l, m, 0]·v`` at every position with
    differentiable ``coef``, plus noise ``N(0, 1)·‖h‖·noise_scale`` (norm not differentiated)
    as the official ``inject_hook_func`` in train mode."""
    hooks = []
    for layer in range(model.n_layers):
        for m, module in enumerate(MODULES):

            def hook(act: Tensor, hook: Any = None, layer: int = layer, m: int = m) -> Tensor:
                v = context[layer, m].to(act.device, act.dtype)
                out = coef[layer, m, 1] * act + coef[layer, m, 0] * v
                if noise_scale:
                    noise = torch.randn(out.shape, generator=generator, device=out.device,
                                        dtype=out.dtype)  # fmt: skip
                    out = out + noise * out.norm(dim=-1, keepdim=True).detach() * noise_scale
                return out.to(act.dtype)  # float32 coefficients on a half-precision model

            hooks.append((module_hook(model, layer, module), hook))
    return hooks


def calibration_loss(
    model: TVModel,
    context: Float[Tensor, "layer module d_model"],
    coef: Tensor,
    batch: PromptBatch,
    noise_scale: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The calibration objective: cross-entropy of each prompt's answer's first token at its
    query position, with the context vectors mixed in by ``coef``."""
    with model.bridge.hooks(fwd_hooks=mix_hooks(model, context, coef, noise_scale, generator)):
        logits = model.bridge(batch.tokens, attention_mask=batch.attention_mask)
    rows = torch.arange(len(batch), device=logits.device)
    return F.cross_entropy(logits[rows, batch.query_pos].float(), batch.answer_first)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """The official schedule: linear warm-up over ``warmup`` steps, then a cosine over
    ``total`` steps (it does not reach zero: ``total`` counts ``epochs·n // batch``)."""
    if step <= warmup:
        return step / warmup
    return min(1.0, step / warmup) * (1 + math.cos(math.pi * step / total)) / 2


def calibrate(
    model: TVModel,
    context: Float[Tensor, "layer module d_model"],
    prompts: Sequence[ICLPrompt],
    *,
    epochs: int = D.I2CL_EPOCHS,  # the I2CL method's options (defaults.py)
    lr: float = D.I2CL_LR,
    weight_decay: float = D.I2CL_WEIGHT_DECAY,
    batch_size: int = D.I2CL_BATCH_SIZE,
    noise_scale: float = D.I2CL_NOISE_SCALE,
    init: tuple[float, float] = D.I2CL_INIT,
    seed: int = 0,
    progress: bool = False,
) -> tuple[Float[Tensor, "layer module 2"], list[float]]:
    """The trained coefficients ``[layer, module, (c_ctx, c_keep)]`` and each epoch's mean
    loss. The model's weights are not changed (only the coefficients get gradients)."""
    n = len(prompts)
    if batch_size < 1 or n < batch_size:
        raise ConfigError(
            f"I2CL calibrates on its {n} demonstrations in batches of {batch_size}: use "
            f"k >= batch_size >= 1."
        )
    if epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {epochs}.")
    device = model.device
    coef = torch.zeros(model.n_layers, len(MODULES), 2, device=device)
    coef = torch.nn.Parameter(coef + torch.tensor(init, device=device, dtype=coef.dtype))
    optimizer = torch.optim.AdamW([coef], lr, weight_decay=weight_decay)
    per_epoch = n // batch_size
    total = epochs * n // batch_size
    warmup = max(1, int(0.05 * epochs * per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total)
    )
    order = list(range(n))
    batches = np.random.RandomState(seed)
    noise = torch.Generator(device=device).manual_seed(seed)
    losses = []
    for _ in tqdm(range(epochs), desc="I2CL calibration", disable=not progress):
        epoch_loss = []
        for _ in range(per_epoch):
            batches.shuffle(order)
            batch = tokenize_prompts([prompts[i] for i in order[:batch_size]], model,
                                     padding_side="right")  # fmt: skip
            with torch.enable_grad():
                loss = calibration_loss(model, context, coef, batch, noise_scale, noise)
                (grad,) = torch.autograd.grad(loss, [coef])
            coef.grad = grad
            optimizer.step()
            scheduler.step()
            epoch_loss.append(loss.item())
        losses.append(float(np.mean(epoch_loss)))
    return coef.detach(), losses


@dataclass(frozen=True)
class I2CLResult:
    """Context vectors, their calibrated coefficients and how they are written."""

    context: Float[Tensor, "layer module d_model"]
    coef: Float[Tensor, "layer module 2"]
    model_name: str
    task: str
    k: int
    losses: tuple[float, ...] = ()
    info: dict = field(default_factory=dict)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(range(self.context.shape[0]))

    def intervention(self) -> Intervention:
        """At every layer and position: ``h ← c_keep·h + c_ctx·v`` on the attention and MLP
        modules' outputs."""
        writes = tuple(
            Write(layer, self.context[layer, m], point=POINT[module], op="mix",
                  scale=float(self.coef[layer, m, 0]), keep=float(self.coef[layer, m, 1]),
                  positions="all")
            for layer in self.layers
            for m, module in enumerate(MODULES)
        )  # fmt: skip
        return Intervention(writes, method="i2cl")


def implicit_icl(
    model: TVModel,
    task: Task,
    k: int = 5,
    seed: int = 0,
    template: str | PromptTemplate | None = None,
    *,
    epochs: int = D.I2CL_EPOCHS,  # the I2CL method's options (defaults.py)
    lr: float = D.I2CL_LR,
    weight_decay: float = D.I2CL_WEIGHT_DECAY,
    batch_size: int = D.I2CL_BATCH_SIZE,
    noise_scale: float = D.I2CL_NOISE_SCALE,
    init: tuple[float, float] = D.I2CL_INIT,
    progress: bool = False,
    max_batch: int = 64,
) -> I2CLResult:
    """I2CL for ``task`` from ``k`` of its examples (the train split): context vectors from
    the demonstrations, coefficients calibrated on the same demonstrations asked zero-shot."""
    demos = sample_demonstrations(task, k, seed)
    tmpl = get_template(model.template(template))
    context = context_vectors(model, demos, tmpl, batch_size=max_batch)
    prompts = [ICLPrompt(task.name, (), d, tmpl) for d in demos]
    coef, losses = calibrate(model, context, prompts, epochs=epochs, lr=lr,
                             weight_decay=weight_decay, batch_size=batch_size,
                             noise_scale=noise_scale, init=init, seed=seed,
                             progress=progress)  # fmt: skip
    return I2CLResult(
        context=context, coef=coef, model_name=model.spec.name, task=task.name, k=k,
        losses=tuple(losses),
        info={"seed": seed, "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
              "batch_size": batch_size, "noise_scale": noise_scale, "init": list(init),
              "demonstrations": [[d.input, d.output] for d in demos]},
    )  # fmt: skip
