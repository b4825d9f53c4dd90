"""The ATV generator: a small causal LM reads the query alone and one linear map expands its
pooled hidden state into one steering vector per target layer (Kang et al. 2025, "Adaptive
Task Vectors for Large Language Models").

The paper's generator is GPT-2 small, fully trained, read at the last real token after the
final layer norm, with a full-rank ``Linear(d_gen, n_layers * d_model)`` with bias. Here the
generator is any model :func:`tvlens.models.load_model` takes, trainable or frozen, optionally
cut after its first ``stop_at_layer`` blocks (e.g. a few of SmolLM2's own layers); the pooling
is the last real token or the mean over real tokens; the expansion is full-rank or low-rank.
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from tvlens.errors import TVLensError
from tvlens.models.tvmodel import TVModel

Pooling = Literal["last", "mean"]
FINAL_NORM_HOOK = "ln_final.hook_out"


def last_real_position(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, " batch"]:
    """Index of each row's last real (mask 1) token, under left or right padding."""
    if bool((attention_mask.sum(-1) == 0).any()):
        raise TVLensError("A row of the batch has no real token (its attention mask is all 0).")
    width = attention_mask.shape[1]
    return width - 1 - attention_mask.flip(-1).long().argmax(-1)


def pool_hidden(
    hidden: Float[Tensor, "batch pos d"],
    attention_mask: Int[Tensor, "batch pos"],
    pooling: Pooling = "last",
) -> Float[Tensor, "batch d"]:
    """The last real token's state, or the mean over real tokens (pads excluded)."""
    if pooling == "last":
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, last_real_position(attention_mask).to(hidden.device)]
    if pooling == "mean":
        w = attention_mask.to(hidden.dtype)[..., None]
        return (hidden * w).sum(1) / w.sum(1)
    raise TVLensError(f"pooling must be 'last' or 'mean', got {pooling!r}.")


class LowRankLinear(nn.Module):
    """``Linear(d_in, r, no bias)`` then ``Linear(r, d_out)`` with bias: a rank-r expansion
    with ``r * (d_in + d_out) + d_out`` parameters instead of ``d_in * d_out + d_out``."""

    def __init__(self, d_in: int, d_out: int, rank: int):
        super().__init__()
        if rank < 1:
            raise TVLensError(f"rank must be >= 1, got {rank}.")
        self.down = nn.Linear(d_in, rank, bias=False)
        self.up = nn.Linear(rank, d_out)

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        return self.up(self.down(x))


class ATVGenerator(nn.Module):
    """Query tokens (the generator's own tokenizer) to ``[batch, n_layers, d_model]`` vectors.

    Args:
        lm: The generator LM (a loaded :class:`TVModel`; its bridge becomes a submodule and
            is trained in place: load one per ATV).
        d_model: The *target's* residual width.
        n_layers: How many target layers get a vector.
        rank: ``None``: full-rank expansion (the paper); an int: low-rank.
        pooling: ``"last"`` (the paper) or ``"mean"``.
        trainable: Train the generator LM too (the paper) or keep it frozen.
        stop_at_layer: Read the residual stream entering this block (no final norm) instead
            of the final-norm output: a generator made of the LM's first blocks.
        seed: Initialisation of the expansion.
    """

    def __init__(
        self,
        lm: TVModel,
        d_model: int,
        n_layers: int,
        rank: int | None = None,
        pooling: Pooling = "last",
        trainable: bool = True,
        stop_at_layer: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise TVLensError(f"pooling must be 'last' or 'mean', got {pooling!r}.")
        if stop_at_layer is not None and not 1 <= stop_at_layer <= lm.n_layers:
            raise TVLensError(
                f"generator stop_at_layer must be in 1..{lm.n_layers} for {lm.name}, "
                f"got {stop_at_layer}."
            )
        if stop_at_layer is None and FINAL_NORM_HOOK not in lm.bridge.hook_dict:
            raise TVLensError(
                f"Generator {lm.name} has no {FINAL_NORM_HOOK!r} hook: pass stop_at_layer to "
                "read its residual stream instead."
            )
        self.lm = lm.bridge
        self.lm_spec = lm.spec
        self.tokenizer = lm.tokenizer
        # The generator's prompts start as the model's BOS policy says (tvlens.models.bos):
        # for SmolLM2 its document-start token, not the tokenizer's chat-turn bos_token.
        self.bos_id = lm.bos_for()
        self.d_model, self.n_layers, self.rank = d_model, n_layers, rank
        self.pooling, self.trainable, self.stop_at_layer = pooling, trainable, stop_at_layer
        d_gen, d_out = lm.d_model, n_layers * d_model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.expansion = (
                nn.Linear(d_gen, d_out) if rank is None else LowRankLinear(d_gen, d_out, rank)
            ).to(lm.device)
        if trainable:
            self.lm.requires_grad_(True)
            self._freeze_unreached()
        else:
            self.lm.requires_grad_(False)

    def _freeze_unreached(self) -> None:
        """Freeze the LM parameters the forward pass never uses. The bridge keeps some HF
        tensors that its own components replaced (GPT-2's fused ``c_attn`` beside the split
        q/k/v): they get no gradient, would be counted as trainable, and make DDP fail."""
        tokens = torch.full((1, 2), self.tokenizer.bos_token_id or 0, device=self.lm_device)
        self.zero_grad(set_to_none=True)
        self.hidden(tokens, torch.ones_like(tokens)).float().sum().backward()
        for p in self.lm.parameters():
            if p.grad is None:
                p.requires_grad_(False)
            p.grad = None

    @property
    def lm_device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def hidden(
        self, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, "batch pos d_gen"]:
        """The generator's states: after the final norm, or entering ``stop_at_layer``."""
        if self.stop_at_layer is not None:
            return self.lm(tokens, attention_mask=attention_mask, stop_at_layer=self.stop_at_layer)
        seen: list[Tensor] = []

        # Not adapter.keeper: the generator is trained through this state, so it is kept as it
        # is in the autograd graph (neither a detached copy nor a new leaf).
        def keep(act: Tensor, hook=None) -> Tensor:
            seen.append(act)
            return act

        with self.lm.hooks(fwd_hooks=[(FINAL_NORM_HOOK, keep)]):
            self.lm(tokens, attention_mask=attention_mask, return_type=None)
        return seen[-1]

    def forward(
        self, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, "batch n_layers d_model"]:
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            h = self.hidden(tokens, attention_mask)
        pooled = pool_hidden(h, attention_mask, self.pooling)
        w = self.expansion.up.weight if self.rank is not None else self.expansion.weight
        v = self.expansion(pooled.to(w.dtype))
        return v.view(v.shape[0], self.n_layers, self.d_model)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trainable_state(self) -> dict[str, Tensor]:
        """Every trainable tensor by name (what a saved ATV holds)."""
        return {
            n: p.detach().contiguous().cpu().clone()
            for n, p in self.named_parameters()
            if p.requires_grad
        }
