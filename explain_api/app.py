"""The Flask app: thin views over ``service``; auth, CORS and metrics as request hooks; errors in one handler."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Flask, Response, g, jsonify, request

from explain_api import openapi, payloads, service, video_routes
from explain_api.config import ApiConfig
from explain_api.errors import ApiError, error_response, register_error_handlers
from explain_api.images import DecodedImage, decode_images
from explain_api.metrics import ApiMetrics, InstrumentedClient
from explain_api.parsing import ImageRequest, parse_image_request, parse_version_label
from explain_api.service import ModelCatalog, ModelRef

__all__ = ["AppState", "create_app", "state"]

_STATIC = Path(__file__).parent / "static"
# Endpoints that never ask for a key: probes, metrics, the page and its assets (the page asks for the key itself).
_OPEN_ENDPOINTS = frozenset({"healthz", "readyz", "metrics", "index", "static"})
_MODEL_PATHS = ("/v1/models/<name>", "/v1/models/<name>/versions/<int:version>", "/v1/models/<name>/labels/<label>")


@dataclass(frozen=True)
class AppState:
    """What the views share: settings, the (instrumented) serving client, the model catalog, the metrics."""

    config: ApiConfig
    client: Any
    catalog: ModelCatalog
    metrics: ApiMetrics


def state(app: Flask) -> AppState:
    return app.extensions["glimpse"]


def _default_client(config: ApiConfig) -> Any:
    from glimpse_wire.client import ClientConfig, ServingClient

    return ServingClient(ClientConfig(address=config.serving_address, timeout_s=config.timeout_s))


def create_app(config: ApiConfig | None = None, client: Any = None, *, metrics: ApiMetrics | None = None) -> Flask:
    """Build the app. ``client`` defaults to a ``ServingClient`` on ``config.serving_address``."""
    config = config if config is not None else ApiConfig.from_env()
    metrics = metrics if metrics is not None else ApiMetrics()
    raw_client = client if client is not None else _default_client(config)
    instrumented = InstrumentedClient(raw_client, metrics)
    catalog = ModelCatalog(instrumented, ttl_s=config.metadata_ttl_s, timeout_s=config.timeout_s)

    app = Flask(__name__, static_folder=str(_STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False
    app.extensions["glimpse"] = AppState(config=config, client=instrumented, catalog=catalog, metrics=metrics)
    register_error_handlers(app, retry_after_s=config.retry_after_s)
    _install_hooks(app, config, metrics)
    _install_routes(app, config)
    video_routes.register(app)
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


def _install_hooks(app: Flask, config: ApiConfig, metrics: ApiMetrics) -> None:
    @app.before_request
    def _start() -> Response | None:
        g.glimpse_start = time.perf_counter()
        metrics.in_flight.inc()
        g.glimpse_counted = True
        if (
            config.auth_enabled
            and request.method != "OPTIONS"
            and request.endpoint is not None
            and request.endpoint not in _OPEN_ENDPOINTS
            and not _authorized(request.headers.get("Authorization"), config.api_keys)
        ):
            return error_response(
                401,
                "UNAUTHENTICATED",
                "missing or invalid API key; send 'Authorization: Bearer <key>'",
                {"WWW-Authenticate": 'Bearer realm="glimpse"'},
            )
        return None

    @app.after_request
    def _finish(response: Response) -> Response:
        if config.cors_origins:
            origin = request.headers.get("Origin")
            if origin and ("*" in config.cors_origins or origin in config.cors_origins):
                response.headers["Access-Control-Allow-Origin"] = "*" if "*" in config.cors_origins else origin
                response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Accept"
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                response.headers["Access-Control-Expose-Headers"] = "Retry-After"
                response.headers["Access-Control-Max-Age"] = "600"
                response.vary.add("Origin")
        start = g.get("glimpse_start")
        if start is not None:
            route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            metrics.observe_request(route, request.method, response.status_code, time.perf_counter() - start)
        return response

    @app.teardown_request
    def _teardown(_: BaseException | None) -> None:
        if g.pop("glimpse_counted", False):
            metrics.in_flight.dec()


# --------------------------------------------------------------------------------------------------------- routes


_MAX_VERSION = 2**63 - 1


def _ref(name: str, version: int | None, label: str | None) -> ModelRef:
    if version is not None and version > _MAX_VERSION:
        raise ApiError(400, f"version {version} is out of range (at most {_MAX_VERSION})")
    return ModelRef(name=name, version=version, label=parse_version_label(label))


def _wants_png(req: ImageRequest) -> bool:
    if req.format is not None:
        return req.format in ("png", "grid")
    best = request.accept_mimetypes.best_match(["application/json", "image/png"])
    return best == "image/png"


def _png(data: bytes, headers: dict[str, str]) -> Response:
    response = Response(data, mimetype="image/png")
    response.headers.update(headers)
    return response


def _decoded(req: ImageRequest, config: ApiConfig, metrics: ApiMetrics) -> list[DecodedImage]:
    for blob in req.blobs:
        metrics.observe_image(len(blob))
    return decode_images(req.blobs, max_pixels=config.max_pixels, max_total_pixels=config.max_total_pixels)


def _version_entries(statuses: Any) -> list[dict[str, Any]]:
    out = []
    for s in statuses:
        entry: dict[str, Any] = {"version": int(s.version), "state": str(s.state)}
        if getattr(s, "error_code", None) not in (None, "", "OK"):
            entry["error"] = {"code": str(s.error_code), "message": str(getattr(s, "error_message", "") or "")}
        out.append(entry)
    return sorted(out, key=lambda e: e["version"])


def _install_routes(app: Flask, config: ApiConfig) -> None:
    st = state(app)

    @app.get("/")
    def index() -> Response:
        response = Response((_STATIC / "index.html").read_bytes(), mimetype="text/html")
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        from glimpse_wire.errors import ServingError

        model = config.default_model
        try:
            if model is None:
                try:
                    serving = st.client.health(timeout_s=config.readiness_timeout_s)
                except ServingError as e:
                    if e.code != "UNIMPLEMENTED":
                        raise
                    serving = "SERVING"  # TF Serving has no gRPC health service, but it answered
                if str(serving) != "SERVING":
                    raise ApiError(503, f"model server health is {serving}", code="UNAVAILABLE")
                return jsonify({"ready": True, "model": None, "serving": str(serving)})
            statuses = st.client.status(model, timeout_s=config.readiness_timeout_s)
            versions = _version_entries(statuses)
            available = [v["version"] for v in versions if v["state"] == "AVAILABLE"]
            if not available:
                states = ", ".join(f"{v['version']}:{v['state']}" for v in versions) or "no versions"
                raise ApiError(503, f"model {model} has no AVAILABLE version ({states})", code="UNAVAILABLE")
            return jsonify({"ready": True, "model": model, "versions": available})
        except (ApiError, ServingError) as e:
            code = str(getattr(e, "code", "UNAVAILABLE"))
            message = str(getattr(e, "message", e))
            response = jsonify({"ready": False, "model": model, "error": {"code": code, "message": message}})
            response.status_code = 503
            response.headers["Retry-After"] = str(config.retry_after_s)
            return response

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = st.metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(openapi.build_openapi(config))

    @app.get("/v1/models")
    def list_models() -> Response:
        from glimpse_wire.errors import ServingError

        models = []
        for name in config.model_names:
            entry: dict[str, Any] = {"name": name, "default": name == config.default_model}
            try:
                entry["versions"] = _version_entries(st.client.status(name))
            except ServingError as e:
                if e.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                    raise
                entry["versions"] = []
                entry["error"] = {"code": e.code, "message": e.message}
            models.append(entry)
        return jsonify({"default_model": config.default_model, "models": models})

    def model_detail(name: str, version: int | None = None, label: str | None = None) -> Response:
        ref = _ref(name, version, label)
        statuses = st.client.status(name, version=version, label=ref.label)
        info = st.catalog.get(ref)
        return jsonify(
            {
                "name": info.name,
                "version": info.version,
                "default": name == config.default_model,
                "versions": _version_entries(statuses),
                "labels": list(info.labels),
                "num_classes": info.num_classes,
                "methods": list(info.available_methods),
                "explain_signatures": list(info.methods),
                "blackbox_methods": list(info.fallback_methods),
                "input": {"height": info.input_size[0], "width": info.input_size[1]} if info.input_size else None,
                "signatures": list(info.signatures),
            }
        )

    def predict(name: str, version: int | None = None, label: str | None = None) -> Response:
        ref = _ref(name, version, label)
        req = parse_image_request(request, kind="predict", max_images=config.max_images)
        images = _decoded(req, config, st.metrics)
        outcome = service.predict_images(
            st.client,
            st.catalog,
            ref,
            images,
            top_k=req.top_k or config.top_k,
            budget=config.max_message_bytes,
            timeout_s=config.timeout_s,
            size_factor=config.serving_size_factor,
        )
        return jsonify(payloads.predict_json(outcome))

    def explain(name: str, version: int | None = None, label: str | None = None) -> Response:
        ref = _ref(name, version, label)
        req = parse_image_request(request, kind="explain", max_images=config.max_images)
        images = _decoded(req, config, st.metrics)
        spec = service.ExplainSpec(method=req.method, params=req.params, class_index=req.class_index, label=req.label)
        outcome = service.explain_images(
            st.client,
            st.catalog,
            ref,
            images,
            spec,
            top_k=req.top_k or config.top_k,
            budget=config.max_message_bytes,
            timeout_s=config.timeout_s,
            size_factor=config.serving_size_factor,
        )
        if _wants_png(req):
            first = outcome.images[0]
            kind = "grid" if req.format == "grid" else "overlay"
            data = payloads.explanation_png(first, images[0], colormap=req.colormap, kind=kind)
            return _png(
                data,
                {
                    "X-Glimpse-Model": quote(outcome.name, safe=""),
                    "X-Glimpse-Version": str(outcome.version),
                    "X-Glimpse-Method": outcome.method,
                    "X-Glimpse-Class-Index": str(first.class_index),
                    "X-Glimpse-Score": f"{first.score:.6f}",
                    **payloads.png_headers(first),
                },
            )
        return jsonify(payloads.explain_json(outcome, images, heatmap_size=req.heatmap_size, colormap=req.colormap))

    for path in _MODEL_PATHS:
        app.add_url_rule(path, "model_detail", model_detail, methods=["GET"])
        app.add_url_rule(path + ":predict", "predict", predict, methods=["POST"])
        app.add_url_rule(path + ":explain", "explain", explain, methods=["POST"])
