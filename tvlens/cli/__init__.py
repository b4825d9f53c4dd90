"""The ``tvlens`` command line, a thin layer over the public functions (same arguments): one
module per command group — ``main`` (``tvlens ...``), ``atv`` (``tvlens atv ...``),
``pretrained`` (``tvlens pretrained ...``) — ``errors``, the one error decorator they share, and
``options``, options built from the configs. A command prints its result (``str(result)``,
the text ``print(result)`` shows in Python). Each command imports its library function when it
runs (the only tvlens imports inside functions without a comment): the configs are torch-free,
so ``tvlens --help`` and a bad option answer in well under a second."""

from tvlens.cli.main import app, main

__all__ = ["app", "main"]
