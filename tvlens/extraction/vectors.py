"""``TaskVector``: vectors with the metadata needed to use them safely, saved as safetensors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

import tvlens
from tvlens.errors import LayerError, TVLensError
from tvlens.runs import claim_file
from tvlens.runs.portable import local, portable


class VectorMismatchError(TVLensError, ValueError):
    """A vector used with a model it does not fit (d_model or model name)."""


@dataclass
class TaskVector:
    """One vector per layer in ``layers`` (``vectors[i]`` belongs to ``layers[i]``).

    Attributes:
        method: The name of the extraction method that made it
            (:mod:`tvlens.extraction.registry`), ``"per_query"`` or anything a user sets.
        position: Where it was read: ``"query"`` (the last prompt token).
        where: Which residual point (``"post"``: the output of block ``layer``).
        info: Extra metadata (e.g. the function vector's heads).
    """

    vectors: Float[Tensor, "n_layers d_model"]
    layers: tuple[int, ...]
    model_name: str
    task: str
    method: str
    n_prompts: int
    revision: str | None = None
    position: str = "query"
    where: str = "post"
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors = self.vectors.detach()
        self.layers = tuple(int(x) for x in self.layers)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.layers):
            raise VectorMismatchError(
                f"vectors must be [n_layers, d_model] with one row per layer in {self.layers}, "
                f"got shape {tuple(self.vectors.shape)}."
            )

    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[-1])

    def at(self, layer: int) -> Float[Tensor, " d_model"]:
        """The vector read at ``layer``."""
        if layer not in self.layers:
            raise LayerError(
                f"This {self.method} vector for task {self.task!r} has layers {self.layers}, "
                f"not {layer}."
            )
        return self.vectors[self.layers.index(layer)]

    def select(self, layer: int) -> TaskVector:
        return replace(self, vectors=self.at(layer)[None], layers=(layer,))

    def metadata(self) -> dict[str, Any]:
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "vectors"}
        meta["layers"] = list(self.layers)
        meta["d_model"] = self.d_model
        return meta

    def check_compatible(self, model: Any, strict_name: bool = True) -> None:
        """Raise :class:`VectorMismatchError` unless this vector fits ``model``."""
        d = getattr(model, "d_model", None) or model.cfg.d_model
        if d != self.d_model:
            raise VectorMismatchError(
                f"Vector has d_model={self.d_model} (from {self.model_name}) but the model has "
                f"d_model={d}: it was extracted from a different model."
            )
        name = getattr(getattr(model, "spec", None), "name", None)
        if strict_name and name is not None and name != self.model_name:
            raise VectorMismatchError(
                f"Vector was extracted from {self.model_name!r}, not {name!r}. Pass "
                "strict_name=False if you mean to transfer it."
            )

    def save(self, path: str | Path) -> Path:
        """``path`` (``.safetensors``) with the metadata in its header, and ``path.json``."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        claim_file(path), claim_file(path.with_suffix(".json"))  # no user file is overwritten
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = self.metadata()
        save_file(
            {"vectors": self.vectors.detach().float().cpu().contiguous()},
            str(path),
            metadata={"tvlens": json.dumps(portable(meta))},  # no machine paths
        )
        signed = {**meta, "tvlens": tvlens.__version__}  # tvlens's signature (tvlens.runs)
        path.with_suffix(".json").write_text(json.dumps(portable(signed), indent=2) + "\n")
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: Any | None = None,
        strict_name: bool = True,
        device: str | torch.device | None = None,
    ) -> TaskVector:
        """Load a saved vector; with ``model``, check that it fits (clear error if not)."""
        from safetensors import safe_open

        path = Path(path)
        if path.is_dir():
            found = sorted(p.name for p in path.rglob("*.safetensors"))[:4]
            raise TVLensError(
                f"{str(path)!r} is a folder, not a vector file: give one .safetensors file"
                + (f" (e.g. {', '.join(found)} under it)." if found else ".")
            )
        if not path.is_file():
            raise TVLensError(f"No vector file {str(path)!r}.")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = local(json.loads((f.metadata() or {}).get("tvlens", "{}")))
            vec = load_file(str(path)).get("vectors")
        except Exception as e:  # safetensors raises its own error type for a damaged file
            raise TVLensError(
                f"Vector file {str(path)!r} is truncated or corrupt ({type(e).__name__}: "
                f"{str(e)[:200]}): extract and save the vector again."
            ) from None
        if not meta or vec is None:
            raise TVLensError(f"{str(path)!r} has no tvlens metadata: not a saved TaskVector.")
        meta.pop("d_model", None)
        meta["layers"] = tuple(meta["layers"])
        if device is None and model is not None:
            device = getattr(model, "device", None)
        tv = cls(vectors=vec.to(device) if device else vec, **meta)
        if model is not None:
            tv.check_compatible(model, strict_name=strict_name)
        return tv
