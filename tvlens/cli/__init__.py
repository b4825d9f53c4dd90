"""The ``tvlens`` command line, a thin layer over the public functions (same arguments): one
module per command group — ``main`` (``tvlens ...``), ``atv`` (``tvlens atv ...``),
``pretrained`` (``tvlens pretrained ...``) — and ``errors``, the one error decorator they share."""

from tvlens.cli.main import app, main

__all__ = ["app", "main"]
