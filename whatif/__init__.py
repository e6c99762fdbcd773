"""The What-If Tool for Glimpse models, and the slicing/comparison report.

``import whatif`` calls :func:`whatif.compat.install` (explicitly, below), which makes witwidget 1.8.1 work on
today's stack by adding one import hook; nothing heavy is imported. The public functions are loaded on first use:

- :func:`build_config` -- a ``WitConfigBuilder`` for a served model (and a comparison model or version);
- :func:`write_notebook` -- a ready ``.ipynb`` that builds that config and shows ``WitWidget``;
- :func:`make_report` -- per-slice accuracy, confusion matrices and disagreements, as JSON, Markdown and PNG.
"""

from __future__ import annotations

import importlib
from typing import Any

from whatif import compat

__all__ = [
    "WitConfigError",
    "WitSettings",
    "build_config",
    "resolve_settings",
    "builder_from_settings",
    "load_examples",
    "tensorboard_settings",
    "write_notebook",
    "ReportConfig",
    "ReportError",
    "compute_report",
    "make_report",
    "compat",
]

# The one deliberate import-time effect of this package (see whatif.compat.install).
compat.install()

_LAZY = {
    "WitConfigError": "whatif.config",
    "WitSettings": "whatif.config",
    "build_config": "whatif.config",
    "resolve_settings": "whatif.config",
    "builder_from_settings": "whatif.config",
    "load_examples": "whatif.config",
    "tensorboard_settings": "whatif.config",
    "write_notebook": "whatif.notebook",
    "ReportConfig": "whatif.report",
    "ReportError": "whatif.report",
    "compute_report": "whatif.report",
    "make_report": "whatif.report",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'whatif' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
