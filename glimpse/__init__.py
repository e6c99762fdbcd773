"""Glimpse: train CNN image classifiers, serve them the TF Serving way, and explain their predictions.

This package is the top floor: the ``glimpse`` command line, ``glimpse up`` and the benchmarks. It may import every
other package of the project; nothing imports it (docs/architecture.md).
"""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("glimpse")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
