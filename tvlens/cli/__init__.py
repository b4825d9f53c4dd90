"""The ``tvlens`` command line, a thin layer over the public functions (same arguments):
``main`` lists every command (the function it runs, the configuration its options come from,
its inputs), ``options`` builds a command from such an entry (options from the config's
fields), ``errors`` is the one error decorator on every command. A command prints its result
(``str(result)``, what ``print(result)`` shows in Python) and imports its function when it
runs: the configs are torch-free, so ``tvlens --help`` and a bad option answer in well under
a second."""

from tvlens.cli.main import app

__all__ = ["app"]
