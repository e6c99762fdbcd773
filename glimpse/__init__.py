"""Glimpse: train CNN image classifiers, serve them the TF Serving way, and explain their predictions."""

__all__ = ["__version__"]

__version__ = "0.1.0"
