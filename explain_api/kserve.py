"""KServe's v1 protocol on the explain API's own routes: ``{"instances": [...]}`` bodies in, ``{"predictions": [...]}``
(``:predict``) and ``{"predictions": [...], "explanations": [...]}`` (``:explain``) out.

In a KServe ``InferenceService`` (k8s/kserve/) the explain API is the explainer: KServe's v1 protocol routes
``POST /v1/models/{name}:explain`` to it with the body a client sends any KServe or TF Serving model, and the same
clients call ``:predict``. Glimpse's own bodies (``{"image": {"b64": ...}}``, ``{"images": [...]}``, multipart, raw
images) have no ``instances`` key, so a v1 body is told apart by that key alone and Glimpse's bodies keep working.

Pure functions, no Flask request or app: the view turns a v1 body into Glimpse's own JSON body
(:func:`to_glimpse_body`), parses it with the usual checks (:func:`image_request`), runs as for any request, and
turns Glimpse's answer into KServe's shape (:func:`to_v1_predict`, :func:`to_v1_explain`). docs/api.md ("KServe v1
bodies") documents the mapping. No TensorFlow here.

An instance is an image as the model's ``serving_default`` input takes it in TF Serving's row format,
``{"image_bytes": {"b64": "..."}}``, or the shorter ``{"b64": "..."}``, ``{"image": {"b64": "..."}}`` or a bare base64
string; it may carry ``"key"`` (echoed in its prediction and explanation, TF's batch-prediction convention) and, for
``:explain``, ``"class_index"`` (the explain signatures' per-example input; -1 = the predicted class; every instance
of one request must name the same). The request's options (``method``, ``params``, ``top_k``, ``class_index``,
``label``, ``heatmap_size``, ``colormap``) go in ``"parameters"``; a v1 answer is always JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Request

from explain_api.errors import ApiError
from explain_api.parsing import EXPLAIN_OPTIONS, PREDICT_OPTIONS, ImageRequest, parse_image_request
from glimpse_wire.contract import IN_CLASS_INDEX, IN_IMAGE_BYTES

__all__ = [
    "INSTANCE_IMAGE_KEYS",
    "V1Request",
    "image_request",
    "is_v1_body",
    "to_glimpse_body",
    "to_v1_explain",
    "to_v1_predict",
]

# Where an instance object may hold its image: the serving_default input's name first.
INSTANCE_IMAGE_KEYS: tuple[str, ...] = (IN_IMAGE_BYTES, "image")
_INSTANCE_KEY = "key"
_BODY_KEYS = ("instances", "parameters")
_KINDS = ("predict", "explain")


@dataclass(frozen=True)
class V1Request:
    """A v1 body as Glimpse's own JSON body, and each instance's ``key`` (None where it had none)."""

    body: dict[str, Any]
    keys: tuple[Any, ...]


def is_v1_body(body: Any) -> bool:
    """Whether a parsed JSON body is KServe v1's (``{"instances": [...]}``) rather than one of Glimpse's own."""
    return isinstance(body, Mapping) and "instances" in body


def _b64_of(value: Any, where: str) -> dict[str, str]:
    if isinstance(value, str):
        return {"b64": value}
    if isinstance(value, Mapping) and set(value) == {"b64"} and isinstance(value["b64"], str):
        return {"b64": value["b64"]}
    raise ApiError(400, f'{where} must be {{"b64": "<base64>"}} or a base64 string')


def _instance(item: Any, index: int, kind: str) -> tuple[dict[str, str], Any, Any]:
    """(image as {"b64"}, key, class_index or None) of one instance."""
    where = f"instances[{index}]"
    if isinstance(item, str):
        return {"b64": item}, None, None
    if not isinstance(item, Mapping):
        raise ApiError(400, f'{where} must be an object such as {{"{IN_IMAGE_BYTES}": {{"b64": "..."}}}}')
    if set(item) == {"b64"}:
        return _b64_of(item, where), None, None
    images = [k for k in INSTANCE_IMAGE_KEYS if k in item]
    if len(images) != 1:
        raise ApiError(400, f"{where} must hold one image under {' or '.join(repr(k) for k in INSTANCE_IMAGE_KEYS)}")
    allowed = {images[0], _INSTANCE_KEY} | ({IN_CLASS_INDEX} if kind == "explain" else set())
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)} in {where}; allowed: {', '.join(sorted(allowed))}")
    return _b64_of(item[images[0]], f"{where}.{images[0]}"), item.get(_INSTANCE_KEY), item.get(IN_CLASS_INDEX)


def to_glimpse_body(body: Mapping[str, Any], kind: str) -> V1Request:
    """Glimpse's own JSON body (``{"images": [{"b64": ...}], <options>}``) for a v1 ``:predict`` or ``:explain``
    body; ApiError 400 for what cannot be mapped. The options themselves are checked by the usual parsing."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    unknown = sorted(k for k in body if k not in _BODY_KEYS)
    if unknown:
        allowed = ", ".join(_BODY_KEYS)
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)} in a KServe v1 body; allowed: {allowed}")
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise ApiError(400, "instances must be a non-empty list of images")
    parameters = body.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, Mapping):
        raise ApiError(400, "parameters must be an object of options")
    parsed = [_instance(item, i, kind) for i, item in enumerate(instances)]
    options = dict(parameters)
    fmt = options.pop("format", "json")
    if fmt != "json":
        raise ApiError(400, f"format {fmt!r}: a KServe v1 answer is JSON; drop parameters.format")
    allowed = [k for k in (EXPLAIN_OPTIONS if kind == "explain" else PREDICT_OPTIONS) if k != "format"]
    unknown = sorted(k for k in options if k not in allowed)
    if unknown:
        raise ApiError(400, f"unknown parameter(s) {', '.join(unknown)} for :{kind}; allowed: {', '.join(allowed)}")
    targets = {repr(t) for _, _, t in parsed if t is not None}
    if len(targets) > 1:
        raise ApiError(400, f"the instances name different {IN_CLASS_INDEX} values ({', '.join(sorted(targets))}); "
                            "one request explains one class, send one request per class")
    if targets:
        target = next(t for _, _, t in parsed if t is not None)
        if len([t for _, _, t in parsed if t is not None]) != len(parsed):
            raise ApiError(400, f"{IN_CLASS_INDEX} is given for some instances and not others")
        if "class_index" in options or "label" in options:
            raise ApiError(400, f"{IN_CLASS_INDEX} given both in the instances and in parameters")
        if target != -1:  # -1: the predicted class, as the explain signatures take it (Glimpse: no target)
            options["class_index"] = target
    glimpse: dict[str, Any] = {"images": [image for image, _, _ in parsed], **options}
    if kind == "explain":
        glimpse["format"] = "json"
    return V1Request(glimpse, tuple(key for _, key, _ in parsed))


def image_request(
    body: Mapping[str, Any], *, kind: str, max_images: int, query_string: bytes | str = b""
) -> tuple[ImageRequest, V1Request]:
    """A v1 body as the ``ImageRequest`` Glimpse's handler takes (through the same parsing and checks as its own JSON
    bodies; query parameters of the original request are kept), and the mapping for the answer."""
    v1 = to_glimpse_body(body, kind)
    query = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string  # percent-encoded
    glimpse_request = Request.from_values(method="POST", json=v1.body, query_string=query)
    return parse_image_request(glimpse_request, kind=kind, max_images=max_images), v1


def _with_key(entry: dict[str, Any], key: Any) -> dict[str, Any]:
    return {**entry, _INSTANCE_KEY: key} if key is not None else entry


def _prediction(result: Mapping[str, Any]) -> dict[str, Any]:
    """One image's v1 prediction: the top class (TF Serving's serving_default names) and the top k."""
    ranked = list(result["predictions"])
    top = ranked[0] if ranked else {"class_index": None, "label": None, "score": None}
    return {"class_index": top["class_index"], "label": top["label"], "score": top["score"], "top_k": ranked}


def _checked_results(answer: Mapping[str, Any], keys: Sequence[Any]) -> list[Mapping[str, Any]]:
    results = list(answer["results"])
    if len(results) != len(keys):
        raise ValueError(f"{len(results)} results for {len(keys)} instances")
    return results


def to_v1_predict(answer: Mapping[str, Any], keys: Sequence[Any]) -> dict[str, Any]:
    """Glimpse's ``:predict`` answer (``{"model", "results": [{"predictions": [...]}]}``) as KServe v1's
    ``{"predictions": [...]}``, one entry per instance, in order."""
    return {"predictions": [_with_key(_prediction(r), k) for r, k in zip(_checked_results(answer, keys), keys,
                                                                         strict=True)]}


def to_v1_explain(answer: Mapping[str, Any], keys: Sequence[Any]) -> dict[str, Any]:
    """Glimpse's JSON ``:explain`` answer as KServe v1's ``{"predictions": [...], "explanations": [...]}``: one
    prediction (as :func:`to_v1_predict`) and one explanation per instance. An explanation is Glimpse's result for that
    image (target, heatmap or activations, overlay, image) with the request's method, params, model and route."""
    shared = {k: answer[k] for k in ("model", "method", "params", "via", "colormap") if k in answer}
    results = _checked_results(answer, keys)
    explanations = [_with_key({**shared, **{k: v for k, v in r.items() if k != "predictions"}}, key)
                    for r, key in zip(results, keys, strict=True)]
    predictions = [_with_key(_prediction(r), key) for r, key in zip(results, keys, strict=True)]
    return {"predictions": predictions, "explanations": explanations}
