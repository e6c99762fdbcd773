"""The Flask app: ``create_app(config, client=None)`` registers the blueprints, the request hooks, the error handler.

Blueprints, one module each: ``models`` (``/v1/models`` and the model routes: details, ``:predict``, ``:explain``),
``video_routes`` (``:explain-video``), ``page`` (``/`` and ``/static``), ``ops`` (``/healthz``, ``/readyz``,
``/metrics``, ``/openapi.json``). They share one ``AppState`` (``context``). The hooks here do what every route needs:
API keys (bearer auth, except on the open endpoints), the body limit for every framing (``bodies``), the memory
budget's lease of each request (``budget``), CORS, and the request metrics. Errors are translated in one handler
(``errors``).
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from flask import Flask, Response, g, request

from explain_api import models, ops, page, video_routes
from explain_api.allocator import release_free_memory
from explain_api.bodies import BODY_METHODS, buffer_body, declared_length
from explain_api.budget import MemoryBudget
from explain_api.config import ApiConfig
from explain_api.context import CONVERTERS, EXTENSION, AppState, current_state, state
from explain_api.errors import error_response, register_error_handlers
from explain_api.metrics import ApiMetrics, InstrumentedClient
from explain_api.service import ModelCatalog
from glimpse_wire.client import ClientConfig, ServingClient

__all__ = ["AppState", "create_app", "state"]

# Endpoints that never ask for a key: probes, metrics, the page and its assets (the page asks for the key itself).
_OPEN_ENDPOINTS = frozenset({"ops.healthz", "ops.readyz", "ops.metrics", "page.index", "page.static"})
# A request whose images held at least this much gives the allocator's free pages back when it ends.
_TRIM_AFTER_BYTES = 32 * 1024 * 1024


def _default_client(config: ApiConfig) -> ServingClient:
    return ServingClient(ClientConfig(address=config.serving_address, timeout_s=config.timeout_s))


def create_app(config: ApiConfig | None = None, client: Any = None, *, metrics: ApiMetrics | None = None) -> Flask:
    """Build the app. ``config`` defaults to ``ApiConfig.from_env()``, ``client`` to a ``ServingClient`` on
    ``config.serving_address``."""
    config = config if config is not None else ApiConfig.from_env()
    metrics = metrics if metrics is not None else ApiMetrics()
    raw_client = client if client is not None else _default_client(config)
    instrumented = InstrumentedClient(raw_client, metrics)
    catalog = ModelCatalog(instrumented, ttl_s=config.metadata_ttl_s, timeout_s=config.timeout_s)

    app = Flask(__name__, static_folder=None)
    app.url_map.converters.update(CONVERTERS)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False
    budget = MemoryBudget(config.memory_budget_bytes, wait_s=config.budget_wait_s)
    app.extensions[EXTENSION] = AppState(
        config=config, client=instrumented, catalog=catalog, metrics=metrics, budget=budget
    )
    register_error_handlers(app, retry_after_s=config.retry_after_s)
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_teardown)
    for blueprint in (page.blueprint, ops.blueprint, models.blueprint, video_routes.blueprint):
        app.register_blueprint(blueprint)
    return app


# ---------------------------------------------------------------------------------------------------------- hooks


def _authorized(header: str | None, keys: tuple[str, ...]) -> bool:
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    provided = token.strip().encode("utf-8")
    ok = False
    for key in keys:  # compare with every key, so that timing tells nothing about which one nearly matched
        ok |= hmac.compare_digest(provided, key.encode("utf-8"))
    return ok


def _start() -> Response | None:
    """Count the request in flight; refuse it without a valid key where keys are configured; then read a chunked
    body under the size limit (``bodies``), so that no view ever sees a truncated body."""
    st = current_state()
    g.glimpse_start = time.perf_counter()
    st.metrics.in_flight.inc()
    g.glimpse_counted = True
    if (
        st.config.auth_enabled
        and request.method != "OPTIONS"
        and request.endpoint is not None
        and request.endpoint not in _OPEN_ENDPOINTS
        and not _authorized(request.headers.get("Authorization"), st.config.api_keys)
    ):
        return error_response(
            401,
            "UNAUTHENTICATED",
            "missing or invalid API key; send 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": 'Bearer realm="glimpse"'},
        )
    if request.method in BODY_METHODS:
        # The body and what parsing it makes (a JSON text and its decoded images) count against the budget.
        lease = st.budget.lease()
        g.glimpse_lease = lease
        limit = st.config.max_body_bytes
        length = declared_length(request.environ)
        lease.grow(2 * (limit if length is None else min(length, limit)))
        buffer_body(request.environ, limit)
        lease.resize(2 * (declared_length(request.environ) or 0))
    return None


def _finish(response: Response) -> Response:
    """CORS headers for allowed origins; the request's duration and status in the metrics."""
    st = current_state()
    origins = st.config.cors_origins
    if origins:
        origin = request.headers.get("Origin")
        if origin and ("*" in origins or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Accept"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
            response.headers["Access-Control-Max-Age"] = "600"
            response.vary.add("Origin")
    start = g.get("glimpse_start")
    if start is not None:
        # the rule as users know it (``/v1/models/<name>:explain``), without the converter's name
        route = request.url_rule.rule.replace("<segment:", "<") if request.url_rule is not None else "<unmatched>"
        st.metrics.observe_request(route, request.method, response.status_code, time.perf_counter() - start)
    return response


def _teardown(_: BaseException | None) -> None:
    lease = g.pop("glimpse_lease", None)
    if lease is not None:
        lease.release()
        if lease.peak - 2 * (declared_length(request.environ) or 0) >= _TRIM_AFTER_BYTES:
            release_free_memory()  # a large decode is over: back to the warmed size, not its high-water mark
    if g.pop("glimpse_counted", False):
        current_state().metrics.in_flight.dec()
