"""What every cell of a comparison reads (:class:`CompareContext`): the configuration, the
frozen target, the data split and where to write. The methods' modules import this module and
nothing of the comparison's configuration or registry: the registry names the methods' classes
(imported when a cell is built) and the configuration checks its methods against the registry,
so a method module that imported either would close an import cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvlens.compare.data import CompareData
from tvlens.models.tvmodel import TVModel


@dataclass
class CompareContext:
    """What every cell reads: the configuration, the frozen target, the data, where to write.

    ``cfg`` is the comparison's :class:`~tvlens.compare.config.CompareConfig` (typed ``Any``
    here: see the module's docstring); a method reads its common fields and its family's block
    (``SteeringMethod.options_class``, read as ``method.options``)."""

    cfg: Any
    target: TVModel
    data: CompareData
    out: Path
    device: str
    template: str
    progress: bool = True
    cache: dict = field(default_factory=dict)  # shared between cells (e.g. FV head ranking)
