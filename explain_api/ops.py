"""The ``ops`` blueprint: what operators and tools ask: ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``.

``/healthz`` is the process's liveness (no model server call); ``/readyz`` asks the model server (its gRPC health,
or the default model's versions) and answers 503 with ``Retry-After`` until it can serve; ``/metrics`` is the
Prometheus exposition; ``/openapi.json`` documents every route.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from explain_api import openapi
from explain_api.context import current_state, version_entries
from explain_api.errors import ApiError
from glimpse_wire.errors import ServingError

__all__ = ["blueprint"]

blueprint = Blueprint("ops", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


def _not_ready(error: ApiError | ServingError, model: str | None, retry_after_s: int) -> Response:
    code = str(getattr(error, "code", "UNAVAILABLE"))
    message = str(getattr(error, "message", error))
    response = jsonify({"ready": False, "model": model, "error": {"code": code, "message": message}})
    response.status_code = 503
    response.headers["Retry-After"] = str(retry_after_s)
    return response


@blueprint.get("/readyz")
def readyz() -> Response:
    st = current_state()
    config = st.config
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
        versions = version_entries(statuses)
        available = [v["version"] for v in versions if v["state"] == "AVAILABLE"]
        if not available:
            states = ", ".join(f"{v['version']}:{v['state']}" for v in versions) or "no versions"
            raise ApiError(503, f"model {model} has no AVAILABLE version ({states})", code="UNAVAILABLE")
        return jsonify({"ready": True, "model": model, "versions": available})
    except (ApiError, ServingError) as e:
        return _not_ready(e, model, config.retry_after_s)


@blueprint.get("/metrics")
def metrics() -> Response:
    body, content_type = current_state().metrics.exposition()
    return Response(body, content_type=content_type)


@blueprint.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(openapi.build_openapi(current_state().config))
