"""Read the images and options of a ``:predict`` / ``:explain`` request, whatever form it came in.

Three forms are accepted, and query parameters may be added to any of them (the body wins on conflicts):

- ``multipart/form-data``: one or more files in the field ``image`` (or ``images``), options as form fields;
- a raw ``image/*`` (or ``application/octet-stream``) body: one image, options as query parameters;
- ``application/json``: ``{"image": {"b64": ...}}`` and/or ``{"images": [{"b64": ...}, ...]}`` plus options.

For ``:explain``, form fields and query parameters that are not options are the method's parameters
(``patch_size=16``); JSON takes them in ``params``. Everything is checked here except what needs the model (method
parameters, targets), which ``service`` checks.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Request

from explain_api.errors import ApiError
from rendering.render import COLORMAPS

__all__ = [
    "EXPLAIN_OPTIONS",
    "FORMATS",
    "PREDICT_OPTIONS",
    "ImageRequest",
    "int_field",
    "params_field",
    "parse_image_request",
]

FORMATS: tuple[str, ...] = ("json", "png", "grid")
PREDICT_OPTIONS: tuple[str, ...] = ("top_k",)
EXPLAIN_OPTIONS: tuple[str, ...] = (
    "method", "class_index", "label", "params", "top_k", "heatmap_size", "format", "colormap",
)  # fmt: skip
_JSON_IMAGE_KEYS = ("image", "images")
_RAW_TYPES = ("application/octet-stream",)
_MAX_SIDE = 4096


@dataclass(frozen=True)
class ImageRequest:
    """The uploads and the checked options of one request."""

    blobs: tuple[bytes, ...]
    method: str | None = None  # None: the model's default method (service.ModelInfo.default_method)
    params: dict[str, Any] = field(default_factory=dict)
    class_index: Any = None
    label: Any = None
    top_k: int | None = None
    heatmap_size: tuple[int, int] | None = None
    format: str | None = None  # None = let the Accept header decide
    colormap: str = "viridis"


def _b64(item: Any, where: str) -> bytes:
    if isinstance(item, Mapping):
        if set(item) != {"b64"}:
            raise ApiError(400, f'{where} must be {{"b64": "<base64>"}}, got keys {sorted(item)}')
        item = item["b64"]
    if not isinstance(item, str):
        raise ApiError(400, f'{where} must be {{"b64": "<base64 string>"}}')
    text = item.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, f"{where} is not valid base64: {e}") from e


def int_field(value: Any, name: str, low: int, high: int) -> int:
    """An integer option (a number or its text) in [low, high]; 400 naming the field otherwise."""
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value.strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError):
        raise ApiError(400, f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ApiError(400, f"{name} must be in [{low}, {high}], got {number}")
    return number


def _heatmap_size(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        parts = re.split(r"[x,X ]", value.strip())
        parts = [p for p in parts if p]
        value = parts[0] if len(parts) == 1 else parts
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ApiError(400, f"heatmap_size must be N, [H, W] or 'HxW', got {value!r}")
        return int_field(value[0], "heatmap_size", 1, _MAX_SIDE), int_field(value[1], "heatmap_size", 1, _MAX_SIDE)
    n = int_field(value, "heatmap_size", 1, _MAX_SIDE)
    return n, n


def params_field(value: Any) -> dict[str, Any]:
    """The ``params`` option: a JSON object (or its text) of method parameters; 400 otherwise."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise ApiError(400, f"params must be a JSON object: {e}") from e
    if not isinstance(value, Mapping):
        raise ApiError(400, f"params must be an object of method parameters, got {type(value).__name__}")
    return dict(value)


def _options(raw: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Split raw fields into options and (for explain) method parameters; reject the rest."""
    allowed = EXPLAIN_OPTIONS if kind == "explain" else PREDICT_OPTIONS
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if key in allowed:
            out[key] = value
        elif kind == "explain":
            extra[key] = value
        else:
            raise ApiError(400, f"unknown field {key!r} for :{kind}; allowed: image, {', '.join(allowed)}")
    if "params" in out or extra:
        out["params"] = {**extra, **params_field(out.get("params", {}))}
    return out


def _from_json(request: Request, kind: str) -> tuple[list[bytes], dict[str, Any]]:
    body = request.get_json(silent=True, force=True)
    if body is None:
        raise ApiError(400, "request body is not valid JSON")
    if not isinstance(body, Mapping):
        raise ApiError(400, "JSON body must be an object")
    allowed = set(_JSON_IMAGE_KEYS) | {"target"} | set(EXPLAIN_OPTIONS if kind == "explain" else PREDICT_OPTIONS)
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise ApiError(400, f"unknown JSON field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    blobs: list[bytes] = []
    if "image" in body:
        blobs.append(_b64(body["image"], "image"))
    if "images" in body:
        items = body["images"]
        if not isinstance(items, list):
            raise ApiError(400, 'images must be a list of {"b64": ...} objects')
        blobs.extend(_b64(item, f"images[{i}]") for i, item in enumerate(items))
    options = {k: v for k, v in body.items() if k not in _JSON_IMAGE_KEYS and k != "target"}
    if "target" in body and kind == "explain":
        target = body["target"]
        if not isinstance(target, Mapping) or not set(target) <= {"class_index", "label"}:
            raise ApiError(400, 'target must be {"class_index": N} or {"label": "name"}')
        for key in ("class_index", "label"):
            if key in target:
                if key in options:
                    raise ApiError(400, f"{key} given both in target and at the top level")
                options[key] = target[key]
    elif "target" in body:
        raise ApiError(400, f"unknown JSON field target for :{kind}")
    if "params" in options:
        options["params"] = params_field(options["params"])
    return blobs, options


def _from_multipart(request: Request) -> tuple[list[bytes], dict[str, Any]]:
    unknown_files = sorted(k for k in request.files if k not in _JSON_IMAGE_KEYS)
    if unknown_files:
        raise ApiError(400, f"unknown file field(s) {', '.join(unknown_files)}; send images in the field 'image'")
    blobs = [f.read() for key in _JSON_IMAGE_KEYS for f in request.files.getlist(key)]
    fields = {}
    for key in request.form:
        values = request.form.getlist(key)
        if len(values) != 1:
            raise ApiError(400, f"form field {key!r} given {len(values)} times")
        fields[key] = values[0]
    return blobs, fields


def parse_image_request(request: Request, *, kind: str, max_images: int) -> ImageRequest:
    """Images and options of a ``:predict`` (kind="predict") or ``:explain`` (kind="explain") request."""
    query = {}
    for key in request.args:
        values = request.args.getlist(key)
        if len(values) != 1:
            raise ApiError(400, f"query parameter {key!r} given {len(values)} times")
        query[key] = values[0]
    mimetype = (request.mimetype or "").lower()
    if mimetype == "application/json" or mimetype.endswith("+json"):
        blobs, body = _from_json(request, kind)
    elif mimetype == "multipart/form-data":
        blobs, body = _from_multipart(request)
    elif mimetype.startswith("image/") or mimetype in _RAW_TYPES:
        blobs, body = [request.get_data(cache=False)], {}
    else:
        shown = mimetype or "none"
        raise ApiError(
            415,
            f"unsupported content type {shown}; send multipart/form-data (field 'image'), a raw image/* body, "
            f"or application/json",
        )
    options = _options(query, kind)
    body_options = _options(body, kind) if mimetype == "multipart/form-data" else body
    if "params" in options and "params" in body_options:
        options["params"] = {**options["params"], **body_options.pop("params")}
    options.update(body_options)
    if not blobs:
        raise ApiError(400, "no image in the request; send a file in the field 'image' or a JSON 'image'/'images'")
    if len(blobs) > max_images:
        raise ApiError(413, f"{len(blobs)} images in one request; the limit is {max_images}")
    return _build(blobs, options)


def _build(blobs: list[bytes], options: dict[str, Any]) -> ImageRequest:
    method = options.get("method")
    if method is not None and not isinstance(method, str):
        raise ApiError(400, f"method must be a string, got {method!r}")
    fmt = options.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise ApiError(400, f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    colormap = options.get("colormap", "viridis")
    if colormap not in COLORMAPS:
        raise ApiError(400, f"unknown colormap {colormap!r}; allowed: {', '.join(COLORMAPS)}")
    top_k = options.get("top_k")
    label = options.get("label")
    if label is not None and not isinstance(label, str):
        raise ApiError(400, f"label must be a string, got {label!r}")
    class_index = options.get("class_index")
    if isinstance(class_index, str) and class_index.strip() == "":
        class_index = None
    if label == "":
        label = None
    return ImageRequest(
        blobs=tuple(blobs),
        method=method,
        params=dict(options.get("params") or {}),
        class_index=class_index,
        label=label,
        top_k=int_field(top_k, "top_k", 1, 1000) if top_k not in (None, "") else None,
        heatmap_size=_heatmap_size(options["heatmap_size"]) if options.get("heatmap_size") not in (None, "") else None,
        format=fmt,
        colormap=colormap,
    )
