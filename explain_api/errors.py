"""Errors at the HTTP edge: one handler turns every failure into ``{"error": {"code", "message"}}``.

Serving errors (``glimpse_wire.errors.ServingError``) keep their gRPC code and the HTTP status of the wire package's
table; UNAVAILABLE adds ``Retry-After``. The API's own failures are ``ApiError``. Werkzeug's HTTP exceptions (404,
405, 413 from the body limit, ...) get the same shape. Anything else is a 500 with a generic message (and a log line).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask, Response, current_app, jsonify
from werkzeug.exceptions import HTTPException

__all__ = [
    "ApiError",
    "bad_request",
    "error_response",
    "register_error_handlers",
    "HTTP_CODES",
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


def _serving_error_response(error: Exception, retry_after_s: int) -> Response:
    code = str(getattr(error, "code", "UNKNOWN") or "UNKNOWN")
    message = str(getattr(error, "message", "") or str(error) or code)
    status = int(getattr(error, "http_status", 0) or 500)
    headers: dict[str, str] = {}
    if code == "UNAVAILABLE" or status == 503:
        status = 503
        headers["Retry-After"] = str(retry_after_s)
        message = f"model server unavailable: {message}"
    elif code == "DEADLINE_EXCEEDED":
        status = 504
        message = f"model server deadline exceeded: {message}"
    if status >= 500 and status not in (501, 503, 504):
        _log.error("serving error %s: %s", code, message)
    return error_response(status, code, message, headers)


def register_error_handlers(app: Flask, *, retry_after_s: int = 5) -> None:
    """Install the single error translation of the API on ``app``."""
    from glimpse_wire.errors import ServingError

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.errorhandler(ServingError)
    def _serving_error(error: Exception) -> Response:
        return _serving_error_response(error, retry_after_s)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
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

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        _log.exception("unhandled error: %s", error)
        return error_response(500, "INTERNAL", "internal error; see the server log")
