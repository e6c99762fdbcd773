"""The ``models`` blueprint: ``GET /v1/models`` and, on every model path, details, ``:predict`` and ``:explain``.

Thin views: read the request (``parsing``), decode the images (``rendering.images``), call one domain function
(``service``), encode the answer (``payloads``). Failures propagate to the one error handler (``errors``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, g, jsonify, request

from explain_api import kserve, payloads, service
from explain_api.budget import image_reservations
from explain_api.context import AppState, add_model_route, current_state, model_ref, version_entries
from explain_api.parsing import ImageRequest, parse_image_request
from glimpse_wire.errors import ServingError
from rendering.images import DecodedImage, decode_images

__all__ = ["blueprint"]

blueprint = Blueprint("models", __name__)


def _wants_png(req: ImageRequest) -> bool:
    if req.format is not None:
        return req.format in ("png", "grid")
    best = request.accept_mimetypes.best_match(["application/json", "image/png"])
    return best == "image/png"


def _png(data: bytes, headers: dict[str, str]) -> Response:
    response = Response(data, mimetype="image/png")
    response.headers.update(headers)
    return response


def _decoded(req: ImageRequest, st: AppState) -> list[DecodedImage]:
    """The request's images, decoded within the per-image and the process's memory limits (``budget``)."""
    config = st.config
    for blob in req.blobs:
        st.metrics.observe_image(len(blob))
    lease = g.get("glimpse_lease")
    if lease is None:
        lease = g.glimpse_lease = st.budget.lease()
    return decode_images(
        req.blobs,
        max_pixels=config.max_pixels,
        max_total_pixels=config.max_total_pixels,
        max_side=config.max_image_side,
        reserve=image_reservations(lease, max_decode_bytes=config.max_decode_bytes, max_side=config.max_image_side),
    )


@blueprint.get("/v1/models")
def list_models() -> Response:
    st = current_state()
    models = []
    for name in st.config.model_names:
        entry: dict[str, Any] = {"name": name, "default": name == st.config.default_model}
        try:
            entry["versions"] = version_entries(st.client.status(name))
        except ServingError as e:
            if e.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise
            entry["versions"] = []
            entry["error"] = {"code": e.code, "message": e.message}
        models.append(entry)
    return jsonify({"default_model": st.config.default_model, "models": models})


def model_detail(name: str, version: int | None = None, label: str | None = None) -> Response:
    st = current_state()
    ref = model_ref(name, version, label)
    statuses = st.client.status(name, version=version, label=ref.label)
    info = st.catalog.get(ref)
    return jsonify(
        {
            "name": info.name,
            "version": info.version,
            "default": name == st.config.default_model,
            "versions": version_entries(statuses),
            "labels": list(info.labels),
            "num_classes": info.num_classes,
            "methods": list(info.available_methods),
            "default_method": info.default_method,
            "explain_signatures": list(info.methods),
            "blackbox_methods": list(info.fallback_methods),
            "input": {"height": info.input_size[0], "width": info.input_size[1]} if info.input_size else None,
            "signatures": list(info.signatures),
        }
    )


def _image_request(kind: str, max_images: int) -> tuple[ImageRequest, kserve.V1Request | None]:
    """The request's images and options; a KServe v1 body (``{"instances": [...]}``) also gives its mapping back."""
    body = request.get_json(silent=True) if request.is_json else None
    if kserve.is_v1_body(body):
        return kserve.image_request(body, kind=kind, max_images=max_images, query_string=request.query_string)
    return parse_image_request(request, kind=kind, max_images=max_images), None


def predict(name: str, version: int | None = None, label: str | None = None) -> Response:
    st = current_state()
    config = st.config
    ref = model_ref(name, version, label)
    req, v1 = _image_request("predict", config.max_images)
    images = _decoded(req, st)
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
    answer = payloads.predict_json(outcome)
    return jsonify(kserve.to_v1_predict(answer, v1.keys) if v1 is not None else answer)


def explain(name: str, version: int | None = None, label: str | None = None) -> Response:
    st = current_state()
    config = st.config
    ref = model_ref(name, version, label)
    req, v1 = _image_request("explain", config.max_images)
    images = _decoded(req, st)
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
    answer = payloads.explain_json(outcome, images, heatmap_size=req.heatmap_size, colormap=req.colormap)
    return jsonify(kserve.to_v1_explain(answer, v1.keys) if v1 is not None else answer)


add_model_route(blueprint, "", model_detail, ["GET"])
add_model_route(blueprint, ":predict", predict, ["POST"])
add_model_route(blueprint, ":explain", explain, ["POST"])
