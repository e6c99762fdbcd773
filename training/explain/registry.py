"""The registry of in-graph explanation methods: contract name -> :class:`~training.explain.base.ExplainMethod`.

The contract (``glimpse_wire.contract``) names the methods (``EXPLAIN_METHODS``), their per-example parameters with
dtypes, defaults and bounds (``METHOD_PARAMS``) and their outputs; it stays the only place that does. Each method's
code lives in the module of this package named after it (``training/explain/<method>.py``), which defines ``METHOD``.
The registry loads exactly those modules, in the contract's order, so adding a method is one new module here plus its
entries in the contract. The exporter (``training.export``), the explanation benchmarks (``glimpse.bench_explain``)
and the parameter table in docs/contract.md (:func:`parameter_table`) all read it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from glimpse_wire.contract import EXPLAIN_METHODS, MethodParam
from training.explain.base import ExplainMethod

__all__ = ["REGISTRY", "get_method", "registered_methods", "attribution_methods", "parameter_table"]

_PACKAGE = __name__.rpartition(".")[0]


def _load(name: str) -> ExplainMethod:
    """The ``METHOD`` of ``training.explain.<name>``, checked to be the method of that name."""
    module = importlib.import_module(f"{_PACKAGE}.{name}")
    method = getattr(module, "METHOD", None)
    if not isinstance(method, ExplainMethod) or method.name != name:
        raise ImportError(f"{module.__name__} must define METHOD = ExplainMethod(name={name!r}, ...)")
    return method


REGISTRY: Mapping[str, ExplainMethod] = MappingProxyType({name: _load(name) for name in EXPLAIN_METHODS})


def get_method(name: str) -> ExplainMethod:
    """The registered method ``name``; ValueError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(REGISTRY)}") from None


def registered_methods() -> tuple[str, ...]:
    """Every registered method, in the contract's order (the ``explain_<method>`` signatures an export may carry)."""
    return tuple(REGISTRY)


def attribution_methods() -> tuple[str, ...]:
    """The registered class-attribution methods (all but ``activations``), in the contract's order."""
    return tuple(name for name, method in REGISTRY.items() if method.is_attribution)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _param_cells(param: MethodParam) -> str:
    """The cells of one parameter's row: name, dtype, default, range (for named choices: each value and its name),
    meaning."""
    if isinstance(param.default, bool):
        default = str(param.default).lower()
    else:
        default = str(float(param.default)) if param.dtype == "float32" else str(param.default)
    if param.choices:
        bounds = ", ".join(f"{i} = `{name}`" for i, name in enumerate(param.choices))
    elif param.minimum is None and param.maximum is None:
        bounds = "-"
    else:
        low = "" if param.minimum is None else _number(param.minimum)
        high = "" if param.maximum is None else _number(param.maximum)
        bounds = f"{low} to {high}".strip()
    return f"`{param.name}` | {param.dtype} [B] | `{default}` | {bounds} | {param.help} |"


def parameter_table() -> str:
    """The Markdown table of every registered method's signature and per-example parameters (name, dtype, default,
    range or named choices, meaning), as docs/contract.md shows it; one row per parameter, one row for a method
    without any."""
    lines = [
        "| signature | what it shows | parameter | dtype | default | range | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in REGISTRY.values():
        head = f"| `{method.signature}` | {method.summary} | "
        if not method.params:
            lines.append(head + "none | | | | |")
        for param in method.params:
            lines.append(head + _param_cells(param))
            head = "| ″ | | "
    return "\n".join(lines) + "\n"
