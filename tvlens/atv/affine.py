"""The static affine ATV: the form of ATV that Kang et al. 2025 (arXiv 2506.03426, sec. 5)
compare with LoRA at equal rank, as a steering module for a frozen target.

At each steered block ``l`` it adds to the block's residual write (the output of its MLP's
down / output projection, the map LoRA adapts in ``lora_r{rank}``) a vector that is an affine
function of what that projection reads at the same position::

    v_l(a) = b_l + s · U_l V_lᵀ a_l      a_l ∈ R^d_mlp, U_l ∈ R^{d_model×r}, V_l ∈ R^{d_mlp×r}

No generator reads the query: the map is the same for every query (static). With ``b = 0``,
``U = B`` and ``V = Aᵀ`` (peft's LoRA matrices of that projection, ``s`` its ``alpha / r``)
it is exactly LoRA on the projection; ``b`` adds what a bias on it would. This is the brief's
reading of the theorem's static affine ATV (a bias plus a rank-r multiplicative term on the
activation the LoRA'd site reads); the theorem's own text was not at hand when this was
written, so a difference in its notation is not ruled out.

Pads are never written (as :func:`tvlens.atv.steering.steering_weights`: only positions with
attention mask 1), so a row's logits do not depend on its padding. Written before any norm
that follows the MLP (Gemma-2/3, OLMo-2), where LoRA's change lands; on Llama, GPT-2 and NeoX
that is the same as adding at ``hook_resid_post``, where ATV adds its vector.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from tvlens.atv.steering import steering_weights
from tvlens.errors import TVLensError
from tvlens.models.tvmodel import TVModel


def mlp_width(target: TVModel) -> int:
    """The width of what each block's MLP output projection reads (``d_mlp``)."""
    d_mlp = getattr(target.bridge.cfg, "d_mlp", None)
    if not d_mlp:
        raise TVLensError(
            f"{target.name} records no MLP width (cfg.d_mlp): the static affine ATV needs it."
        )
    return int(d_mlp)


class StaticAffineATV(nn.Module):
    """``b_l + scaling · U_l V_lᵀ a_l`` at each of ``layers`` (see the module's docstring).

    Started as peft starts LoRA: ``V`` like LoRA's ``A`` (uniform in ±1/√d_mlp, peft's
    Kaiming start), ``U`` and ``b`` at zero, so the target is untouched at step 0 and the
    multiplicative term trains as LoRA's does at the same learning rate and ``scaling``."""

    def __init__(
        self, layers: Sequence[int], d_model: int, d_mlp: int, rank: int,
        scaling: float = 1.0, seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise TVLensError(f"rank must be an integer >= 1, got {rank!r}.")
        self.layers, self.rank, self.scaling = list(layers), rank, float(scaling)
        n = len(self.layers)
        g = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(d_mlp)
        self.V = nn.Parameter((torch.rand(n, d_mlp, rank, generator=g) * 2 - 1) * bound)
        self.U = nn.Parameter(torch.zeros(n, d_model, rank))
        self.b = nn.Parameter(torch.zeros(n, d_model))

    def delta(self, i: int, a: Float[Tensor, "batch pos d_mlp"]) -> Float[Tensor, "batch pos d"]:
        """The vector written at the ``i``-th steered layer for the activations ``a``."""
        U, V, b = (p.to(a.device, a.dtype) for p in (self.U[i], self.V[i], self.b[i]))
        return b + self.scaling * (a @ V) @ U.T

    def trainable_parameters(self) -> int:
        """``len(layers) · (r · (d_model + d_mlp) + d_model)``."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _read_hook(store: dict[int, Tensor], i: int):
    def hook(act: Tensor, hook=None) -> Tensor:
        store[i] = act
        return act

    return hook


def _write_hook(module: StaticAffineATV, store: dict[int, Tensor], i: int, weights: Tensor):
    def hook(act: Tensor, hook=None) -> Tensor:
        a = store.pop(i, None)
        if a is None or a.shape[:2] != act.shape[:2] or act.shape[:2] != weights.shape:
            raise TVLensError(
                f"The static affine ATV was set up for a batch of shape {tuple(weights.shape)} "
                f"but the target ran on {tuple(act.shape[:2])}: steer the tokens whose "
                "attention mask it was given."
            )
        w = weights.to(act.device, act.dtype)[..., None]
        return act + w * module.delta(i, a)

    return hook


@contextmanager
def steer_affine(
    target: TVModel, module: StaticAffineATV, attention_mask: Int[Tensor, "batch pos"]
) -> Iterator[TVModel]:
    """While the block runs, every forward of ``target`` on the batch ``attention_mask``
    describes gets ``module``'s affine write at each of its layers (real tokens only). Two
    hooks per layer (one reads the MLP output projection's input, one adds to its output),
    all removed on exit, also when the block raises."""
    layers = [target.check_layer(layer) for layer in module.layers]
    if len(set(layers)) != len(layers):
        raise TVLensError(f"Steering layers repeat: {layers}.")
    d_mlp = mlp_width(target)
    if module.U.shape[1] != target.d_model or module.V.shape[1] != d_mlp:
        raise TVLensError(
            f"The static affine ATV maps d_mlp={module.V.shape[1]} to d_model="
            f"{module.U.shape[1]}; {target.name} has d_mlp={d_mlp}, d_model={target.d_model}: "
            "build it for this target."
        )
    weights = steering_weights(attention_mask, "all")
    store: dict[int, Tensor] = {}
    hooks = []
    for i, layer in enumerate(layers):
        hooks.append((f"blocks.{layer}.mlp.out.hook_in", _read_hook(store, i)))
        hooks.append((f"blocks.{layer}.mlp.out.hook_out", _write_hook(module, store, i, weights)))
    try:
        with target.bridge.hooks(fwd_hooks=hooks):
            yield target
    finally:
        store.clear()  # no activation outlives the block


class AffineSteered:
    """Looks like a tvlens model to :func:`tvlens.evaluation.icl.evaluate_prompts`: the target
    steered by ``module`` on whatever batch it is called with."""

    def __init__(self, target: TVModel, module: StaticAffineATV):
        self.target, self.module, self.bridge = target, module, target.bridge
        self.device = target.device

    def __call__(
        self, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, "batch pos d_vocab"]:
        with steer_affine(self.target, self.module, attention_mask):
            return self.target(tokens, attention_mask=attention_mask)
