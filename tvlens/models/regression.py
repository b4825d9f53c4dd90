"""The read-in / read-out transformer of the regression task family
(:mod:`tvlens.tasks.regression`), hookable through ``TransformerBridge``.

The model is an HF causal LM (GPT-2 or Llama) with ``vocab_size=1``: its ``lm_head`` is the
read-out ``d_model -> 1``. The read-in ``d_in -> d_model`` is saved with safetensors beside the
HF folder (``read_in.safetensors``). Through the bridge, ``bridge(embed(tokens),
start_at_layer=0)`` runs the same computation, so every hook, :func:`tvlens.injection.inject`
and TD work on it (with Llama's rotary positions nothing is added before block 0, so the
read-in output *is* the residual entering block 0; GPT-2 adds its learned positions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor, nn

from tvlens.errors import CheckpointError, TVLensError
from tvlens.models.loading import TVModel, load_model
from tvlens.tasks.regression import RegressionMixture

READ_IN_FILE = "read_in.safetensors"


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
