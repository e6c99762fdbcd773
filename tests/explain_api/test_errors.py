"""The one error table (explain_api.errors): every domain error of rendering, the service and the model server maps
to the status and code word the API answered before the errors became domain types, through the one handler, in the
wire shape ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import pytest
from flask import Flask

from explain_api.errors import ERROR_TABLE, ApiError, register_error_handlers, status_for
from explain_api.exceptions import (
    BadModelOutput,
    InvalidParameter,
    TooMuchWork,
    UnknownMethod,
    UnsupportedModel,
)
from glimpse_wire import errors as wire
from rendering import errors as rendering_errors
from rendering.errors import (
    EncoderError,
    ImageTooLarge,
    InvalidImage,
    InvalidVideo,
    RenderingError,
    UnsupportedFormat,
    VideoTooLarge,
)
from rendering.images import decode_image
from rendering.video import output_format
from tests.rendering.conftest import solid

# What the API answered for each failure when the domain raised ApiError(status) itself.
BEFORE: dict[type[Exception], tuple[int, str]] = {
    InvalidImage: (400, "INVALID_ARGUMENT"),
    UnsupportedFormat: (400, "INVALID_ARGUMENT"),
    ImageTooLarge: (413, "PAYLOAD_TOO_LARGE"),
    InvalidVideo: (400, "INVALID_ARGUMENT"),
    VideoTooLarge: (413, "PAYLOAD_TOO_LARGE"),
    InvalidParameter: (400, "INVALID_ARGUMENT"),
    UnknownMethod: (400, "INVALID_ARGUMENT"),
    TooMuchWork: (400, "INVALID_ARGUMENT"),
    UnsupportedModel: (422, "UNPROCESSABLE"),
    BadModelOutput: (502, "BAD_GATEWAY"),
}


def _app(error: BaseException) -> Flask:
    app = Flask(__name__)
    register_error_handlers(app, retry_after_s=7)

    @app.get("/fail")
    def fail() -> None:
        raise error

    return app


def test_rendering_raises_its_own_errors_never_http() -> None:
    with pytest.raises(UnsupportedFormat):
        decode_image(b"not an image", max_pixels=100)
    with pytest.raises(ImageTooLarge):
        decode_image(solid((1, 2, 3), (20, 10)), max_pixels=199)
    with pytest.raises(InvalidVideo):
        output_format("clip.avi")
    public = [getattr(rendering_errors, name) for name in rendering_errors.__all__]
    assert all(issubclass(cls, RenderingError) for cls in public)
    assert not any(hasattr(cls("x"), "status") for cls in public)


def test_every_concrete_domain_error_has_its_old_status_in_the_table() -> None:
    concrete = {getattr(rendering_errors, name) for name in rendering_errors.__all__} - {
        RenderingError,
        rendering_errors.ImageError,
        rendering_errors.VideoError,
        EncoderError,
    }
    concrete |= {InvalidParameter, UnknownMethod, TooMuchWork, UnsupportedModel, BadModelOutput}
    assert concrete == set(BEFORE)
    for cls, row in BEFORE.items():
        assert ERROR_TABLE[cls] == row, cls
        assert status_for(cls("x")) == row
    # The encoder failing is the machine's fault: no row, so the handler answers a generic 500.
    assert status_for(EncoderError("disk full")) is None


@pytest.mark.parametrize("cls", list(BEFORE))
def test_the_one_handler_answers_the_table(cls: type[Exception]) -> None:
    response = _app(cls("what went wrong")).test_client().get("/fail")
    status, code = BEFORE[cls]
    assert response.status_code == status
    assert response.get_json() == {"error": {"code": code, "message": "what went wrong"}}


@pytest.mark.parametrize(
    ("error", "status", "message", "retry_after"),
    [
        (wire.NotFound("no model"), 404, "no model", None),
        (wire.InvalidArgument("bad input"), 400, "bad input", None),
        (wire.FailedPrecondition("not loaded"), 400, "not loaded", None),
        (wire.ResourceExhausted("busy"), 429, "busy", None),
        (wire.Unimplemented("no"), 501, "no", None),
        (wire.Unavailable("down"), 503, "model server unavailable: down", "7"),
        (wire.DeadlineExceeded("slow"), 504, "model server deadline exceeded: slow", None),
        (wire.Internal("boom"), 500, "boom", None),
    ],
)
def test_serving_errors_map_by_grpc_code(error: wire.ServingError, status: int, message: str, retry_after) -> None:
    assert status_for(error) == (status, error.code) == ERROR_TABLE[error.code]
    response = _app(error).test_client().get("/fail")
    assert response.status_code == status
    assert response.get_json() == {"error": {"code": error.code, "message": message}}
    assert response.headers.get("Retry-After") == retry_after


def test_api_errors_unknown_errors_and_http_exceptions() -> None:
    response = _app(ApiError(415, "wrong type")).test_client().get("/fail")
    assert (response.status_code, response.get_json()["error"]["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    response = _app(EncoderError("ffmpeg died")).test_client().get("/fail")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "INTERNAL", "message": "internal error; see the server log"}}
    response = _app(ValueError("x")).test_client().get("/nowhere")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "NOT_FOUND"
