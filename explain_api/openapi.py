"""The OpenAPI 3.0 document of every route (served at ``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from explain_api.config import ApiConfig
from explain_api.parsing import FORMATS
from explain_api.video import DEFAULT_BATCH_SIZE
from explain_api.video_routes import MAX_BATCH_SIZE, VIDEO_FIELD, VIDEO_TYPES
from glimpse_wire import contract as c
from rendering.render import COLORMAPS
from rendering.video import OUTPUT_FORMATS

__all__ = ["build_openapi"]

_REF = "#/components/schemas/"
_ERROR_STATUSES = {
    "400": "Bad input: the message says what is wrong and lists allowed values.",
    "401": "Missing or invalid API key (only when keys are configured).",
    "404": "Unknown model, version or route.",
    "413": "Body, image or image count over the configured limits.",
    "415": "Unsupported content type.",
    "422": "The model cannot answer this method (re-export with `glimpse export`).",
    "502": "The model server answered something unusable.",
    "503": "Model server unavailable, or the memory budget of the images in flight is full (see Retry-After).",
    "504": "Model server deadline exceeded.",
}


_METHOD_DEFAULT = (
    f"explanation method; default: the model's default_method ({c.DEFAULT_EXPLAIN_METHOD} where the version exports "
    "it, else gradcam, else occlusion)"
)

def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _errors(*codes: str) -> dict[str, Any]:
    out = {}
    for code in codes:
        entry: dict[str, Any] = {
            "description": _ERROR_STATUSES[code],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        if code == "503":
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}
        out[code] = entry
    return out


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param_schema(p: c.MethodParam) -> dict[str, Any]:
    """One method parameter: its type, default and range; a parameter with named choices as an enum of the names
    (the API takes their numbers too, and answers with the name)."""
    if p.choices:
        numbers = ", ".join(f"{i} = {name}" for i, name in enumerate(p.choices))
        return {
            "type": "string",
            "enum": list(p.choices),
            "default": p.choices[int(p.default)],
            "description": f"{p.help} Also accepted as a number: {numbers}.",
        }
    kind = {"bool": "boolean", "int32": "integer", "float32": "number"}[p.dtype]
    schema: dict[str, Any] = {"type": kind, "default": p.default, "description": p.help}
    if p.minimum is not None:
        schema["minimum"] = p.minimum
    if p.maximum is not None:
        schema["maximum"] = p.maximum
    return schema


def _schemas() -> dict[str, Any]:
    number = {"type": "number"}
    nullable_int = {"type": "integer", "nullable": True}
    prediction = {
        "type": "object",
        "required": ["label", "score", "class_index"],
        "properties": {"label": {"type": "string"}, "score": number, "class_index": {"type": "integer"}},
    }
    model = {
        "type": "object",
        "required": ["name", "version"],
        "properties": {"name": {"type": "string"}, "version": nullable_int},
    }
    b64 = {
        "type": "object",
        "required": ["b64"],
        "additionalProperties": False,
        "properties": {"b64": {"type": "string", "description": "Base64 of a JPEG/PNG/GIF/BMP/WebP file."}},
    }
    heatmap_size = {
        "oneOf": [
            {"type": "integer", "minimum": 1, "maximum": 4096},
            {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": 4096},
                "minItems": 2,
                "maxItems": 2,
            },
        ],
        "description": "Downsample the heatmap values to N x N or [H, W] (never above the model input size).",
    }
    params_props: dict[str, Any] = {}
    for method_params in c.METHOD_PARAMS.values():
        for p in method_params:
            params_props[p.name] = _param_schema(p)
    version_status = {
        "type": "object",
        "required": ["version", "state"],
        "properties": {"version": {"type": "integer"}, "state": {"type": "string"}, "error": _ref("ErrorBody")},
    }
    return {
        "ErrorBody": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        "Error": {"type": "object", "required": ["error"], "properties": {"error": _ref("ErrorBody")}},
        "Prediction": prediction,
        "Float32Array": {
            "type": "object",
            "description": "A float32 array: base64 of its little-endian, row-major bytes. channels: the layer's raw "
            "[h, w, K] output; grid: [rows, cols] in [0, 1], channel k at tile (k // n, k % n), tiles = [n, n].",
            "required": ["shape", "dtype", "b64"],
            "properties": {
                "shape": {"type": "array", "items": {"type": "integer"}},
                "dtype": {"type": "string", "enum": ["float32"]},
                "b64": {"type": "string", "format": "byte"},
                "tiles": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "Model": model,
        "ImageB64": b64,
        "VersionStatus": version_status,
        "PredictRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "image": _ref("ImageB64"),
                "images": {"type": "array", "items": _ref("ImageB64")},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
        },
        "ExplainRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "image": _ref("ImageB64"),
                "images": {"type": "array", "items": _ref("ImageB64")},
                "method": {"type": "string", "enum": list(c.EXPLAIN_METHODS), "description": _METHOD_DEFAULT},
                "target": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"class_index": {"type": "integer", "minimum": -1}, "label": {"type": "string"}},
                },
                "params": {
                    "type": "object",
                    "properties": params_props,
                    "description": "Parameters of the chosen method (defaults filled in the response).",
                },
                "top_k": {"type": "integer", "minimum": 1, "maximum": 1000},
                "heatmap_size": heatmap_size,
                "format": {"type": "string", "enum": list(FORMATS)},
                "colormap": {"type": "string", "enum": list(COLORMAPS), "default": "viridis"},
            },
        },
        "PredictResponse": {
            "type": "object",
            "required": ["model", "results"],
            "properties": {
                "model": _ref("Model"),
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["predictions"],
                        "properties": {"predictions": {"type": "array", "items": _ref("Prediction")}},
                    },
                },
            },
        },
        "ExplainResponse": {
            "type": "object",
            "required": ["model", "method", "params", "via", "results"],
            "properties": {
                "model": _ref("Model"),
                "method": {"type": "string", "enum": list(c.EXPLAIN_METHODS)},
                "params": {"type": "object"},
                "via": {"type": "string", "enum": ["signature", "blackbox"]},
                "colormap": {"type": "string"},
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "description": "heatmap and overlay_jpeg for the class-attribution methods; activations and "
                        "grid_png for method activations.",
                        "required": ["target", "predictions", "image"],
                        "properties": {
                            "target": {
                                "type": "object",
                                "required": ["class_index", "label", "score"],
                                "properties": {
                                    "class_index": {"type": "integer"},
                                    "label": {"type": "string"},
                                    "score": number,
                                },
                            },
                            "predictions": {"type": "array", "items": _ref("Prediction")},
                            "heatmap": {
                                "type": "object",
                                "required": ["shape", "values", "input_size", "content_box"],
                                "properties": {
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "values": {"type": "array", "items": {"type": "array", "items": number}},
                                    "input_size": {"type": "array", "items": {"type": "integer"}},
                                    "content_box": {"type": "object"},
                                },
                            },
                            "overlay_jpeg": {"type": "string", "format": "byte"},
                            "activations": {
                                "type": "object",
                                "required": ["layer", "layer_name", "channels", "grid"],
                                "properties": {
                                    "layer": {"type": "integer", "description": "Index in activation_layers."},
                                    "layer_name": {"type": "string"},
                                    "channels": _ref("Float32Array"),
                                    "grid": _ref("Float32Array"),
                                },
                            },
                            "grid_png": {"type": "string", "format": "byte"},
                            "image": {"type": "object"},
                        },
                    },
                },
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["default_model", "models"],
            "properties": {
                "default_model": {"type": "string", "nullable": True},
                "models": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "default", "versions"],
                        "properties": {
                            "name": {"type": "string"},
                            "default": {"type": "boolean"},
                            "versions": {"type": "array", "items": _ref("VersionStatus")},
                            "error": _ref("ErrorBody"),
                        },
                    },
                },
            },
        },
        "ModelDetail": {
            "type": "object",
            "required": ["name", "version", "versions", "labels", "methods"],
            "properties": {
                "name": {"type": "string"},
                "version": nullable_int,
                "default": {"type": "boolean"},
                "versions": {"type": "array", "items": _ref("VersionStatus")},
                "labels": {"type": "array", "items": {"type": "string"}},
                "num_classes": nullable_int,
                "methods": {"type": "array", "items": {"type": "string", "enum": list(c.EXPLAIN_METHODS)}},
                "explain_signatures": {"type": "array", "items": {"type": "string"}},
                "blackbox_methods": {"type": "array", "items": {"type": "string"}},
                "input": {
                    "type": "object",
                    "nullable": True,
                    "properties": {"height": {"type": "integer"}, "width": {"type": "integer"}},
                },
                "signatures": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Ready": {
            "type": "object",
            "required": ["ready"],
            "properties": {
                "ready": {"type": "boolean"},
                "model": {"type": "string", "nullable": True},
                "error": _ref("ErrorBody"),
            },
        },
    }


def _path_params(kind: str) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
            "description": "Model name.",
        }
    ]
    if kind == "version":
        params.append(
            {
                "name": "version",
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            }
        )
    elif kind == "label":
        params.append(
            {
                "name": "label",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_]+$"},
                "description": "Version label.",
            }
        )
    return params


def _form_schema(explain: bool) -> dict[str, Any]:
    props: dict[str, Any] = {
        "image": {"type": "string", "format": "binary", "description": "One image file (repeat for several)."},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000},
    }
    if explain:
        props.update(
            {
                "method": {"type": "string", "enum": list(c.EXPLAIN_METHODS)},
                "class_index": {"type": "integer", "minimum": -1},
                "label": {"type": "string"},
                "heatmap_size": {"type": "integer", "minimum": 1, "maximum": 4096},
                "format": {"type": "string", "enum": list(FORMATS)},
                "colormap": {"type": "string", "enum": list(COLORMAPS)},
                "params": {"type": "string", "description": "JSON object of method parameters."},
            }
        )
    return {"type": "object", "required": ["image"], "properties": props, "additionalProperties": explain}


def _query_params(explain: bool) -> list[dict[str, Any]]:
    out = [{"name": "top_k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}]
    if explain:
        out += [
            {"name": "method", "in": "query", "schema": {"type": "string", "enum": list(c.EXPLAIN_METHODS)}},
            {"name": "class_index", "in": "query", "schema": {"type": "integer", "minimum": -1}},
            {"name": "label", "in": "query", "schema": {"type": "string"}},
            {"name": "format", "in": "query", "schema": {"type": "string", "enum": list(FORMATS)}},
            {"name": "colormap", "in": "query", "schema": {"type": "string", "enum": list(COLORMAPS)}},
            {"name": "heatmap_size", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 4096}},
        ]
    return out


def _image_operation(kind: str, explain: bool, secured: list[dict[str, Any]]) -> dict[str, Any]:
    what = "explain" if explain else "predict"
    body_schema = _ref("ExplainRequest") if explain else _ref("PredictRequest")
    ok = _json(_ref("ExplainResponse" if explain else "PredictResponse"), "One result per image, in order.")
    if explain:
        ok["content"]["image/png"] = {"schema": {"type": "string", "format": "binary"}}
        ok["description"] += (
            " With `Accept: image/png` or `format=png|grid`: the first image's overlay or grid (for activations: the"
            " channel grid, or the original next to it)."
        )
    op = {
        "operationId": f"{what}_{kind}",
        "summary": ("Explain" if explain else "Classify") + " one or more images in one batched model call.",
        "tags": ["models"],
        "parameters": _path_params(kind) + _query_params(explain),
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": _form_schema(explain)},
                "application/json": {"schema": body_schema},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": {
            "200": ok,
            **_errors("400", "401", "404", "413", "415", "422", "502", "503", "504"),
        },
    }
    if secured:
        op["security"] = secured
    return op


def _video_operation(kind: str, secured: list[dict[str, Any]]) -> dict[str, Any]:
    binary = {"type": "string", "format": "binary"}
    options: dict[str, Any] = {
        "method": {"type": "string", "enum": list(c.EXPLAIN_METHODS), "description": _METHOD_DEFAULT},
        "class_index": {"type": "integer", "minimum": -1},
        "label": {"type": "string"},
        "format": {"type": "string", "enum": list(OUTPUT_FORMATS), "description": "Default: from Accept, else mp4."},
        "batch_size": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_SIZE, "default": DEFAULT_BATCH_SIZE},
        "colormap": {"type": "string", "enum": list(COLORMAPS)},
        "caption": {"type": "boolean", "default": True},
    }
    form = {
        "type": "object",
        "required": [VIDEO_FIELD],
        "properties": {
            VIDEO_FIELD: {**binary, "description": "The video: MP4, WebM, MOV, AVI, MKV or GIF."},
            **options,
            "params": {"type": "string", "description": "JSON object of method parameters."},
        },
        "additionalProperties": True,
    }
    headers = {
        f"X-Glimpse-{name}": {"schema": {"type": type_}, "description": text}
        for name, type_, text in (
            ("Frames", "integer", "Frames written."),
            ("Fps", "number", "Frame rate of the output (the source's)."),
            ("Calls", "integer", "Model-server calls: ceil(frames / batch_size) for in-graph methods."),
        )
    }
    op: dict[str, Any] = {
        "operationId": f"explain_video_{kind}",
        "summary": "Explain every frame of a short clip (batched model calls) and return the captioned overlay video.",
        "tags": ["models"],
        "parameters": _path_params(kind) + [{"name": k, "in": "query", "schema": v} for k, v in options.items()],
        "requestBody": {
            "required": True,
            "description": "The video as the body (any video/* type, image/gif or application/octet-stream), or "
            "multipart/form-data with the file in the field 'video'.",
            "content": {"multipart/form-data": {"schema": form}, **{t: {"schema": binary} for t in VIDEO_TYPES}},
        },
        "responses": {
            "200": {
                "description": "The overlay video at the source's frame rate, each frame captioned with its label.",
                "headers": headers,
                "content": {t: {"schema": binary} for t in OUTPUT_FORMATS.values()},
            },
            **_errors("400", "401", "404", "413", "415", "422", "502", "503", "504"),
        },
    }
    if secured:
        op["security"] = secured
    return op


def build_openapi(config: ApiConfig) -> dict[str, Any]:
    """The document; security requirements appear when API keys are configured."""
    secured = [{"bearerAuth": []}] if config.auth_enabled else []
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "operationId": "page",
                "summary": "The web page.",
                "tags": ["page"],
                "responses": {"200": {"description": "HTML page.", "content": {"text/html": {}}}},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process answers.",
                "tags": ["ops"],
                "responses": {
                    "200": _json(
                        {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                        "Alive.",
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["ops"],
                "summary": "Readiness: the model server answers and the default model is AVAILABLE.",
                "responses": {
                    "200": _json(_ref("Ready"), "Ready."),
                    "503": {
                        **_json(_ref("Ready"), "Not ready."),
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics.",
                "tags": ["ops"],
                "responses": {
                    "200": {
                        "description": "Text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "tags": ["ops"],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0 document."), **_errors("401")},
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "list_models",
                "tags": ["models"],
                "summary": "The configured models (default first) with their version states.",
                "responses": {"200": _json(_ref("ModelList"), "Models."), **_errors("401", "503", "504")},
            }
        },
    }
    if secured:
        for op in ("/openapi.json", "/v1/models"):
            paths[op]["get"]["security"] = secured
    prefixes = {
        "name": "/v1/models/{name}",
        "version": "/v1/models/{name}/versions/{version}",
        "label": "/v1/models/{name}/labels/{label}",
    }
    for kind, prefix in prefixes.items():
        detail = {
            "operationId": f"get_model_{kind}",
            "summary": "Versions, labels, explanation methods and input size of a model.",
            "tags": ["models"],
            "parameters": _path_params(kind),
            "responses": {"200": _json(_ref("ModelDetail"), "Model."), **_errors("400", "401", "404", "503", "504")},
        }
        if secured:
            detail["security"] = secured
        paths[prefix] = {"get": detail}
        paths[prefix + ":predict"] = {"post": _image_operation(kind, False, secured)}
        paths[prefix + ":explain"] = {"post": _image_operation(kind, True, secured)}
        paths[prefix + ":explain-video"] = {"post": _video_operation(kind, secured)}
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "Glimpse explain API",
            "version": "1",
            "description": "Predictions and explanations (Grad-CAM, occlusion, gradient maps) of served image "
            'classifiers. Errors: {"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    return doc
