"""Errors at the HTTP edge: the only place where failures become HTTP statuses, in one table and one handler.

Every failure leaves the API as ``{"error": {"code", "message"}}``. ``ERROR_TABLE`` maps the domain errors to a
status and a code word: the rendering package's (``rendering.errors``: bad or too large images and videos), the
service's own (``explain_api.exceptions``: bad parameters, unknown methods, too much work, unsupported models, bad
model outputs, bodies over the limit, a full memory budget) and the model server's
(``glimpse_wire.errors.ServingError``, by its gRPC code, with the wire package's gRPC -> HTTP statuses). Every 503
carries ``Retry-After``. ``ApiError`` is for the HTTP layer's own refusals (request parsing, routes), which carry
their status. Werkzeug's HTTP exceptions (404, 405, 413 from the body limit, ...) get the same shape. Anything else
is a 500 with a generic message (and a log line).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

from explain_api.exceptions import (
    BadModelOutput,
    InvalidParameter,
    Overloaded,
    RequestTooLarge,
    TooMuchWork,
    UnknownMethod,
    UnsupportedModel,
)
from glimpse_wire.errors import CODES, HTTP_STATUS, ServingError
from rendering.errors import ImageTooLarge, InvalidImage, InvalidVideo, UnsupportedFormat, VideoTooLarge

__all__ = [
    "ERROR_TABLE",
    "HTTP_CODES",
    "ApiError",
    "bad_request",
    "error_response",
    "register_error_handlers",
    "status_for",
]

_log = logging.getLogger(__name__)

# HTTP status -> the code word of the wire shape for the API's own errors (gRPC-like names where one fits).
HTTP_CODES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    411: "LENGTH_REQUIRED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "BAD_GATEWAY",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


# Domain error -> (HTTP status, code word); a gRPC code name (a string key) stands for a ServingError with that code.
# A type's subclasses share its row unless they have their own; an error without a row is a 500 (see the handler).
ERROR_TABLE: Mapping[type[Exception] | str, tuple[int, str]] = MappingProxyType(
    {
        # rendering.errors
        InvalidImage: (400, "INVALID_ARGUMENT"),
        UnsupportedFormat: (400, "INVALID_ARGUMENT"),
        ImageTooLarge: (413, "PAYLOAD_TOO_LARGE"),
        InvalidVideo: (400, "INVALID_ARGUMENT"),
        VideoTooLarge: (413, "PAYLOAD_TOO_LARGE"),
        # explain_api.exceptions
        InvalidParameter: (400, "INVALID_ARGUMENT"),
        UnknownMethod: (400, "INVALID_ARGUMENT"),
        TooMuchWork: (400, "INVALID_ARGUMENT"),
        UnsupportedModel: (422, "UNPROCESSABLE"),
        BadModelOutput: (502, "BAD_GATEWAY"),
        RequestTooLarge: (413, "PAYLOAD_TOO_LARGE"),
        Overloaded: (503, "UNAVAILABLE"),
        # glimpse_wire.errors.ServingError by gRPC code: the wire package's status, the code itself as the word
        **{code: (HTTP_STATUS.get(code, 500), code) for code in CODES if code != "OK"},
    }
)


def status_for(error: BaseException) -> tuple[int, str] | None:
    """The (HTTP status, code word) of a domain error in ``ERROR_TABLE``; None for errors the table does not know."""
    if isinstance(error, ServingError):
        return ERROR_TABLE.get(error.code, (500, error.code or "UNKNOWN"))
    for cls in type(error).__mro__:
        row = ERROR_TABLE.get(cls)
        if row is not None:
            return row
    return None


class ApiError(Exception):
    """An error the API answers itself: HTTP status, code word, message, optional headers."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = int(status)
        self.code = code or HTTP_CODES.get(self.status, "UNKNOWN")
        self.message = message
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code}, {self.message!r})"


def bad_request(message: str) -> ApiError:
    """A 400 INVALID_ARGUMENT."""
    return ApiError(400, message)


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """The wire shape of every error."""
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _domain_error_response(error: Exception, status: int, code: str, retry_after_s: int) -> Response:
    message = str(getattr(error, "message", "") or str(error) or code)
    headers: dict[str, str] = {}
    if status == 503:
        headers["Retry-After"] = str(retry_after_s)
    if isinstance(error, ServingError):
        if status == 503:
            message = f"model server unavailable: {message}"
        elif code == "DEADLINE_EXCEEDED":
            message = f"model server deadline exceeded: {message}"
        if status >= 500 and status not in (501, 503, 504):
            _log.error("serving error %s: %s", code, message)
    return error_response(status, code, message, headers)


def _http_exception_response(error: HTTPException) -> Response:
    status = int(error.code or 500)
    message = error.description or error.name
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        message = f"request body too large; the limit is {limit} bytes" if limit else "request body too large"
    response = error_response(status, HTTP_CODES.get(status, "UNKNOWN"), message)
    for key, value in error.get_headers():
        if key.lower() != "content-type":
            response.headers[key] = value
    return response


def register_error_handlers(app: Flask, *, retry_after_s: int = 5) -> None:
    """Install the single error translation of the API on ``app``: one handler for every exception."""

    @app.errorhandler(Exception)
    def _handle(error: Exception) -> Response:
        if isinstance(error, ApiError):
            return error_response(error.status, error.code, error.message, error.headers)
        if isinstance(error, HTTPException):
            return _http_exception_response(error)
        row = status_for(error)
        if row is not None:
            return _domain_error_response(error, *row, retry_after_s)
        _log.exception("unhandled error: %s", error)
        return error_response(500, "INTERNAL", "internal error; see the server log")
