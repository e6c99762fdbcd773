"""A ready What-If Tool notebook: one cell builds the config with :func:`whatif.config.build_config`, one shows WIT.

The notebook holds the *arguments* of ``build_config``, not a frozen copy of the config, so running it asks the
server again (the served version, the label vocab) exactly as ``build_config`` does in any other program.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from whatif.config import WitSettings, build_config, tensorboard_settings

__all__ = [
    "NOTEBOOK_ARGUMENTS",
    "config_cell_source",
    "widget_cell_source",
    "make_notebook",
    "write_notebook",
]

# build_config's parameters a notebook may set (the client factory is a live object, not source code).
NOTEBOOK_ARGUMENTS: tuple[str, ...] = tuple(
    name for name in inspect.signature(build_config).parameters if name != "client_factory"
)
_POSITIONAL = ("serving_address", "model_name", "examples_path")
_CONFIG_CELL_TAG = "whatif-config"
_WIDGET_CELL_TAG = "whatif-widget"


def _literal(name: str, value: Any) -> str:
    """Python source for a notebook argument: only None, bool, int, str and lists of str are written."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return repr(list(value))
    raise TypeError(f"notebook argument {name!r} must be None, a bool, int, str or list of str, got {value!r}")


def config_cell_source(arguments: Mapping[str, Any]) -> str:
    """The code cell that installs :mod:`whatif.compat` and builds ``config_builder`` from ``arguments``
    (build_config's)."""
    unknown = sorted(set(arguments) - set(NOTEBOOK_ARGUMENTS))
    if unknown:
        raise ValueError(f"not build_config arguments: {', '.join(unknown)}; expected some of {NOTEBOOK_ARGUMENTS}")
    missing = [name for name in _POSITIONAL if name not in arguments]
    if missing:
        raise ValueError(f"missing build_config arguments: {', '.join(missing)}")
    lines = [
        "from whatif.compat import install",
        "from whatif.config import build_config",
        "",
        "install()  # makes witwidget 1.8.1 work on today's stack; runs before anything imports witwidget",
        "config_builder = build_config(",
    ]
    lines += [f"    {_literal(name, arguments[name])}," for name in _POSITIONAL]
    lines += [
        f"    {name}={_literal(name, arguments[name])},"
        for name in NOTEBOOK_ARGUMENTS
        if name in arguments and name not in _POSITIONAL
    ]
    lines.append(")")
    return "\n".join(lines)


def widget_cell_source(height: int = 800) -> str:
    """The code cell that shows the What-If Tool for ``config_builder``."""
    if isinstance(height, bool) or not isinstance(height, int) or height < 100:
        raise ValueError(f"height must be an int >= 100 pixels, got {height!r}")
    return (
        "from witwidget.notebook.visualization import WitWidget\n\n"
        f"WitWidget(config_builder, height={height})"
    )


def _settings_markdown(settings: WitSettings) -> str:
    rows = "\n".join(f"| {field} | `{value}` |" if value else f"| {field} | |" for field, value in
                     tensorboard_settings(settings))
    vocab = ", ".join(settings.label_vocab)
    return (
        "## The same model in TensorBoard's What-If Tool\n\n"
        "| setting | value |\n|---|---|\n"
        f"{rows}\n\n"
        f"Label vocab ({len(settings.label_vocab)} classes): {vocab}."
    )


def make_notebook(arguments: Mapping[str, Any], *, settings: WitSettings | None = None, height: int = 800) -> Any:
    """The notebook (an ``nbformat`` v4 node): a title, the config cell, the widget cell and, when ``settings`` are
    given, TensorBoard's settings table."""
    import nbformat

    model = arguments.get("model_name", "")
    title = (
        f"# What-If Tool: `{model}`\n\n"
        f"The examples of `{os.fspath(arguments.get('examples_path', ''))}` classified by the model served at "
        f"`{arguments.get('serving_address', '')}`. Run the cells in order; the server must be up. The widget needs "
        "witwidget's notebook extension (`wit-widget`), which `pip install witwidget` places in the environment."
    )
    cells = [
        nbformat.v4.new_markdown_cell(title),
        nbformat.v4.new_code_cell(config_cell_source(arguments), metadata={"tags": [_CONFIG_CELL_TAG]}),
        nbformat.v4.new_code_cell(widget_cell_source(height), metadata={"tags": [_WIDGET_CELL_TAG]}),
    ]
    if settings is not None:
        cells.append(nbformat.v4.new_markdown_cell(_settings_markdown(settings)))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    nbformat.validate(notebook)
    return notebook


def write_notebook(
    path: str | os.PathLike[str],
    arguments: Mapping[str, Any],
    *,
    settings: WitSettings | None = None,
    height: int = 800,
) -> Path:
    """Write the What-If Tool notebook for ``arguments`` (build_config's keyword arguments) to ``path``."""
    import nbformat

    notebook = make_notebook(arguments, settings=settings, height=height)
    path = Path(path)
    if path.suffix != ".ipynb":
        raise ValueError(f"a notebook path ends in .ipynb, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(notebook, str(tmp))
    os.replace(tmp, path)
    return path
