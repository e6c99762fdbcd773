"""``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:explain-video``: a short clip in, the explained clip out.

The body is the video itself (``video/*``, ``image/gif`` or ``application/octet-stream``, options as query
parameters) or ``multipart/form-data`` with the file in the field ``video`` and options as form fields. Options:
``method`` (default: the model's default method), ``class_index`` or ``label`` (the class to explain; default each
frame's top class), ``format`` (``mp4`` or ``gif``; default from the Accept header, else mp4), ``batch_size``
(frames per model call, default 8), ``colormap``, ``caption`` (true/false), ``params`` (a JSON object); any other
field is a parameter of the method, as for ``:explain``. The answer is the video (``video/mp4`` or ``image/gif``)
with ``X-Glimpse-*`` headers (model, version, method, frames, fps, model calls). Limits
(``ApiConfig.video_limits``): bytes, frames, seconds and pixels per frame, each a 413 with the limit in the message
(``rendering.errors.VideoTooLarge`` in ``errors``' table).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Request, Response, request

from explain_api import service
from explain_api.config import ApiConfig
from explain_api.context import add_model_route, current_state, model_ref
from explain_api.errors import ApiError
from explain_api.parsing import int_field, params_field
from explain_api.video import DEFAULT_BATCH_SIZE, VideoOptions, explain_video
from glimpse_wire.booleans import parse_bool
from rendering.video import OUTPUT_FORMATS

__all__ = ["MAX_BATCH_SIZE", "VIDEO_FIELD", "VIDEO_OPTIONS", "VIDEO_TYPES", "blueprint"]

VIDEO_FIELD = "video"
# Raw body content types accepted besides any video/*.
VIDEO_TYPES: tuple[str, ...] = ("image/gif", "application/octet-stream")
VIDEO_OPTIONS: tuple[str, ...] = (
    "method", "class_index", "label", "format", "batch_size", "colormap", "caption", "params",
)  # fmt: skip
MAX_BATCH_SIZE = 64

blueprint = Blueprint("video", __name__)


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
    return {**extra, **(params_field(options["params"]) if "params" in options else {})}


def _output_format(options: Mapping[str, str], req: Request) -> str:
    fmt = options.get("format")
    if fmt is None:
        best = req.accept_mimetypes.best_match(list(OUTPUT_FORMATS.values()))
        return next((k for k, v in OUTPUT_FORMATS.items() if v == best), "mp4")
    if fmt not in OUTPUT_FORMATS:
        raise ApiError(400, f"unknown format {fmt!r}; allowed: {', '.join(OUTPUT_FORMATS)}")
    return fmt


def _options(config: ApiConfig, fields: Mapping[str, str]) -> tuple[VideoOptions, dict[str, str], dict[str, str]]:
    options = {k: v for k, v in fields.items() if k in VIDEO_OPTIONS}
    extra = {k: v for k, v in fields.items() if k not in VIDEO_OPTIONS}
    try:
        caption = parse_bool(options.get("caption", "true"))
    except ValueError:
        raise ApiError(400, f"caption must be true or false, got {options['caption']!r}") from None
    try:
        video_options = VideoOptions(
            batch_size=int_field(options.get("batch_size", DEFAULT_BATCH_SIZE), "batch_size", 1, MAX_BATCH_SIZE),
            colormap=options.get("colormap", "viridis"),
            caption=caption,
            budget=config.max_message_bytes,
            timeout_s=config.timeout_s,
            size_factor=config.serving_size_factor,
        )
    except ValueError as e:
        raise ApiError(400, str(e)) from e
    return video_options, options, extra


def explain_video_view(name: str, version: int | None = None, label: str | None = None) -> Response:
    st = current_state()
    limits = st.config.video_limits
    ref = model_ref(name, version, label)
    data, body_fields = _read_body(request, limits.max_bytes)
    fields = {**_single_valued(request.args, "query parameter"), **body_fields}
    video_options, options, extra = _options(st.config, fields)
    fmt = _output_format(options, request)
    spec = service.ExplainSpec(
        method=options.get("method"),
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


add_model_route(blueprint, ":explain-video", explain_video_view, ["POST"])
