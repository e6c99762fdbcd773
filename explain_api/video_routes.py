"""``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:explain-video``: a short clip in, the explained clip out.

The body is the video itself (``video/*``, ``image/gif`` or ``application/octet-stream``, options as query
parameters) or ``multipart/form-data`` with the file in the field ``video`` and options as form fields. Options:
``method`` (default gradcam), ``class_index`` or ``label`` (the class to explain; default each frame's top class),
``format`` (``mp4`` or ``gif``; default from the Accept header, else mp4), ``batch_size`` (frames per model call,
default 8), ``colormap``, ``caption`` (true/false), ``params`` (a JSON object); any other field is a parameter of the
method, as for ``:explain``. The answer is the video (``video/mp4`` or ``image/gif``) with ``X-Glimpse-*`` headers
(model, version, method, frames, fps, model calls). Limits (``VideoLimits.from_env``): bytes, frames, seconds and
pixels per frame, each a 413 with the limit in the message.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Flask, Request, Response, request

from explain_api.errors import ApiError
from explain_api.parsing import _int, _params_field  # the same number and JSON rules as :explain
from explain_api.video import DEFAULT_BATCH_SIZE, OUTPUT_FORMATS, VideoLimits, VideoOptions, explain_video

__all__ = ["MAX_BATCH_SIZE", "VIDEO_FIELD", "VIDEO_OPTIONS", "VIDEO_TYPES", "register"]

VIDEO_FIELD = "video"
# Raw body content types accepted besides any video/*.
VIDEO_TYPES: tuple[str, ...] = ("image/gif", "application/octet-stream")
VIDEO_OPTIONS: tuple[str, ...] = (
    "method", "class_index", "label", "format", "batch_size", "colormap", "caption", "params",
)  # fmt: skip
MAX_BATCH_SIZE = 64
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _single_valued(multi: Any, where: str) -> dict[str, str]:
    out = {}
    for key in multi:
        values = multi.getlist(key)
        if len(values) != 1:
            raise ApiError(400, f"{where} {key!r} given {len(values)} times")
        out[key] = values[0]
    return out


def _read_body(req: Request, max_bytes: int | None) -> tuple[bytes, dict[str, str]]:
    """The video bytes and the options of the body (form fields); 413/415 before anything large is read."""
    length = req.content_length
    if max_bytes is not None and length is not None and length > max_bytes:
        raise ApiError(413, f"the video has {length} bytes; the limit is {max_bytes}")
    mimetype = (req.mimetype or "").lower()
    if mimetype == "multipart/form-data":
        unknown = sorted(k for k in req.files if k != VIDEO_FIELD)
        if unknown:
            raise ApiError(400, f"unknown file field(s) {', '.join(unknown)}; send the video in the field 'video'")
        files = req.files.getlist(VIDEO_FIELD)
        if len(files) != 1:
            raise ApiError(400, f"send exactly one video in the field 'video' (got {len(files)})")
        return files[0].read(), _single_valued(req.form, "form field")
    if mimetype.startswith("video/") or mimetype in VIDEO_TYPES:
        return req.get_data(cache=False), {}
    raise ApiError(
        415,
        f"unsupported content type {mimetype or 'none'}; send the video as the body (video/*, image/gif) "
        f"or as multipart/form-data in the field 'video'",
    )


def _params(options: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, Any]:
    return {**extra, **(_params_field(options["params"]) if "params" in options else {})}


def _output_format(options: Mapping[str, str], req: Request) -> str:
    fmt = options.get("format")
    if fmt is None:
        best = req.accept_mimetypes.best_match(list(OUTPUT_FORMATS.values()))
        return next((k for k, v in OUTPUT_FORMATS.items() if v == best), "mp4")
    if fmt not in OUTPUT_FORMATS:
        raise ApiError(400, f"unknown format {fmt!r}; allowed: {', '.join(OUTPUT_FORMATS)}")
    return fmt


def _options(config: Any, fields: Mapping[str, str]) -> tuple[VideoOptions, dict[str, str], dict[str, str]]:
    options = {k: v for k, v in fields.items() if k in VIDEO_OPTIONS}
    extra = {k: v for k, v in fields.items() if k not in VIDEO_OPTIONS}
    caption = options.get("caption", "true").strip().lower()
    if caption not in _TRUE + _FALSE:
        raise ApiError(400, f"caption must be true or false, got {options['caption']!r}")
    try:
        video_options = VideoOptions(
            batch_size=_int(options.get("batch_size", DEFAULT_BATCH_SIZE), "batch_size", 1, MAX_BATCH_SIZE),
            colormap=options.get("colormap", "viridis"),
            caption=caption in _TRUE,
            budget=config.max_message_bytes,
            timeout_s=config.timeout_s,
            size_factor=config.serving_size_factor,
        )
    except ValueError as e:
        raise ApiError(400, str(e)) from e
    return video_options, options, extra


def register(app: Flask, limits: VideoLimits | None = None) -> None:
    """Add the ``:explain-video`` route to an app built by ``create_app`` (limits default to the environment's)."""
    from explain_api import service
    from explain_api.app import _MODEL_PATHS, _ref, state

    limits = limits if limits is not None else VideoLimits.from_env()
    st = state(app)

    def explain_video_view(name: str, version: int | None = None, label: str | None = None) -> Response:
        ref = _ref(name, version, label)
        data, body_fields = _read_body(request, limits.max_bytes)
        fields = {**_single_valued(request.args, "query parameter"), **body_fields}
        video_options, options, extra = _options(st.config, fields)
        fmt = _output_format(options, request)
        spec = service.ExplainSpec(
            method=options.get("method", "gradcam"),
            params=_params(options, extra),
            class_index=options.get("class_index") or None,
            label=options.get("label") or None,
        )
        service.validate_method(spec.method)
        st.metrics.observe_image(len(data))
        with tempfile.TemporaryDirectory(prefix="glimpse-video-") as tmp:
            source = Path(tmp) / "input"
            source.write_bytes(data)
            del data
            destination = Path(tmp) / f"explained.{fmt}"
            report = explain_video(
                st.client, st.catalog, ref, source, destination, spec, options=video_options, limits=limits
            )
            body = destination.read_bytes()
        response = Response(body, mimetype=OUTPUT_FORMATS[fmt])
        response.headers.update(
            {
                "Content-Disposition": f'inline; filename="explained.{fmt}"',
                "X-Glimpse-Model": quote(report.model, safe=""),
                "X-Glimpse-Version": str(report.version),
                "X-Glimpse-Method": report.method,
                "X-Glimpse-Frames": str(report.frames),
                "X-Glimpse-Fps": f"{report.fps:g}",
                "X-Glimpse-Calls": str(report.calls),
            }
        )
        return response

    for path in _MODEL_PATHS:
        app.add_url_rule(path + ":explain-video", "explain_video", explain_video_view, methods=["POST"])
