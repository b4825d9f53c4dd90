"""Tidy pandas views of result objects: one row per element (layer / head / position / task /
checkpoint), one column per coordinate and per measured value. Every result's ``to_dataframe``
builds on :func:`tidy`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch


def tidy(
    values: Mapping[str, Any],
    dims: Sequence[str],
    coords: Mapping[str, Sequence[Any]] | None = None,
    constants: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """A long table of same-shaped arrays: one row per element, a column per dimension in
    ``dims`` (its coordinate from ``coords``, else its index), one column per array in
    ``values`` (arrays or tensors of one shape, ``len(dims)`` axes), then the ``constants``.

    Example: ``tidy({"td": td}, ("layer", "checkpoint"))`` for a ``[layer, checkpoint]`` table.
    """
    arrays = {
        k: (v.detach().float().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        for k, v in values.items()
    }
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"values have different shapes: {sorted(shapes)}")
    (shape,) = shapes
    if len(shape) != len(dims):
        raise ValueError(f"{len(dims)} dims {tuple(dims)} for arrays of shape {shape}")
    coords = coords or {}
    index = np.indices(shape).reshape(len(shape), -1)
    cols: dict[str, Any] = {}
    for d, (dim, idx) in enumerate(zip(dims, index, strict=True)):
        c = coords.get(dim)
        if c is not None and len(c) != shape[d]:
            raise ValueError(f"{len(c)} coordinates for dim {dim!r} of size {shape[d]}")
        cols[dim] = idx if c is None else np.asarray(list(c), dtype=object)[idx]
    for k, a in arrays.items():
        cols[k] = a.reshape(-1)
    frame = pd.DataFrame(cols)
    for k, v in (constants or {}).items():
        frame[k] = v
    for dim in dims:  # integer coordinates stay integers (object arrays lose the dtype)
        if dim in coords and all(isinstance(x, (int, np.integer)) for x in coords[dim]):
            frame[dim] = frame[dim].astype("int64")
    return frame


def patch_frame(result: Any) -> pd.DataFrame:
    """:meth:`tvlens.patching.PatchResult.to_dataframe`: one row per patched component."""
    dims = tuple(result.dims)
    frame = tidy(
        {"value": result.values, "effect": result.effect(), "normalized": result.normalized()},
        dims,
        {"layer": list(result.layers)},
        {"component": result.component, "method": result.method, "metric": result.metric},
    )
    if "pos" in dims and len(result.pos_labels) == result.values.shape[dims.index("pos")]:
        labels = np.asarray(result.pos_labels, dtype=object)[frame["pos"].to_numpy()]
        frame.insert(frame.columns.get_loc("pos") + 1, "pos_label", labels)
    return frame
