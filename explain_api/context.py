"""What the blueprints share: the app's state (settings, serving client, model catalog, metrics) and model routes.

``create_app`` builds one ``AppState`` and keeps it in ``app.extensions``; views reach it through ``current_state()``
(Flask's ``current_app``), so no blueprint imports the app module. ``MODEL_PATHS`` are the three ways a route names a
model (latest, a version, a version label) and ``model_ref`` turns a route's arguments into a ``ModelRef``. A model
name or label in a path never contains ``:`` (the ``segment`` converter), so ``GET .../tiny:explain`` is the
``:explain`` route with the wrong method (405, ``Allow: POST``), not the details of a model named ``tiny:explain``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, current_app
from werkzeug.routing import BaseConverter

from explain_api.budget import MemoryBudget
from explain_api.config import ApiConfig
from explain_api.exceptions import InvalidParameter
from explain_api.metrics import ApiMetrics
from explain_api.service import ModelCatalog, parse_version_label
from glimpse_wire.client import ModelRef

__all__ = [
    "CONVERTERS",
    "EXTENSION",
    "MODEL_PATHS",
    "SegmentConverter",
    "AppState",
    "add_model_route",
    "current_state",
    "model_ref",
    "state",
    "version_entries",
]

# Key of the state in ``app.extensions``.
EXTENSION = "glimpse"


class SegmentConverter(BaseConverter):
    """One path segment without ``:`` (which starts a route's verb, as in ``:explain``)."""

    regex = "[^/:]+"


# URL converters the model routes use; ``create_app`` installs them before registering the blueprints.
CONVERTERS: dict[str, type[BaseConverter]] = {"segment": SegmentConverter}
MODEL_PATHS: tuple[str, ...] = (
    "/v1/models/<segment:name>",
    "/v1/models/<segment:name>/versions/<int:version>",
    "/v1/models/<segment:name>/labels/<segment:label>",
)
_MAX_VERSION = 2**63 - 1


@dataclass(frozen=True)
class AppState:
    """What the views share: settings, the (instrumented) serving client, the model catalog, the metrics, the memory
    budget of the requests in flight."""

    config: ApiConfig
    client: Any
    catalog: ModelCatalog
    metrics: ApiMetrics
    budget: MemoryBudget


def state(app: Flask) -> AppState:
    """The state of an app built by ``create_app``."""
    return app.extensions[EXTENSION]


def current_state() -> AppState:
    """The state of the app handling the current request."""
    return state(current_app)


def model_ref(name: str, version: int | None = None, label: str | None = None) -> ModelRef:
    """The servable a model route names; ``InvalidParameter`` for a version out of int64 range or a bad label."""
    if version is not None and version > _MAX_VERSION:
        raise InvalidParameter(f"version {version} is out of range (at most {_MAX_VERSION})")
    return ModelRef(name=name, version=version, label=parse_version_label(label))


def add_model_route(blueprint: Blueprint, suffix: str, view: Callable[..., Any], methods: list[str]) -> None:
    """Register ``view`` on every model path plus ``suffix`` (e.g. ``":predict"``), under the view's name."""
    for path in MODEL_PATHS:
        blueprint.add_url_rule(path + suffix, view.__name__, view, methods=methods)


def version_entries(statuses: Any) -> list[dict[str, Any]]:
    """GetModelStatus answers as JSON: version, state and the error of a failed load, by version number."""
    out = []
    for s in statuses:
        entry: dict[str, Any] = {"version": int(s.version), "state": str(s.state)}
        if getattr(s, "error_code", None) not in (None, "", "OK"):
            entry["error"] = {"code": str(s.error_code), "message": str(getattr(s, "error_message", "") or "")}
        out.append(entry)
    return sorted(out, key=lambda e: e["version"])
