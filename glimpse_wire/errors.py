"""Typed serving errors: one class per gRPC status code, the gRPC code -> HTTP status table, and the translation.

Errors are translated once at each edge (docs/architecture.md): the client turns every ``grpc.RpcError`` into a
:class:`ServingError` (``raise from_rpc_error(e) from e``); the HTTP layer turns a ServingError into its
``http_status`` and ``{"error": err.as_dict()}``. Importing this module does not import grpc.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "CODES",
    "HTTP_STATUS",
    "ServingError",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
    "code_name",
    "http_status_for",
    "error_for",
    "from_rpc_error",
]

# Canonical status codes (grpc.StatusCode / tensorflow.error.Code): name -> number.
CODES: Mapping[str, int] = MappingProxyType(
    {
        "OK": 0,
        "CANCELLED": 1,
        "UNKNOWN": 2,
        "INVALID_ARGUMENT": 3,
        "DEADLINE_EXCEEDED": 4,
        "NOT_FOUND": 5,
        "ALREADY_EXISTS": 6,
        "PERMISSION_DENIED": 7,
        "RESOURCE_EXHAUSTED": 8,
        "FAILED_PRECONDITION": 9,
        "ABORTED": 10,
        "OUT_OF_RANGE": 11,
        "UNIMPLEMENTED": 12,
        "INTERNAL": 13,
        "UNAVAILABLE": 14,
        "DATA_LOSS": 15,
        "UNAUTHENTICATED": 16,
    }
)
_NAMES_BY_NUMBER = {number: name for name, number in CODES.items()}

# gRPC code name -> HTTP status; every other code is 500.
HTTP_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "OK": 200,
        "INVALID_ARGUMENT": 400,
        "FAILED_PRECONDITION": 400,
        "OUT_OF_RANGE": 400,
        "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "RESOURCE_EXHAUSTED": 429,
        "CANCELLED": 499,
        "UNIMPLEMENTED": 501,
        "UNAVAILABLE": 503,
        "DEADLINE_EXCEEDED": 504,
    }
)


def code_name(code: Any) -> str:
    """Normalise a status code to its name: accepts a name ("not_found" too), a number, ``grpc.StatusCode`` or
    ``tensorflow.error.Code`` value. ValueError for anything else."""
    if isinstance(code, bool):
        raise ValueError(f"not a status code: {code!r}")
    if isinstance(code, int):
        if code in _NAMES_BY_NUMBER:
            return _NAMES_BY_NUMBER[code]
        raise ValueError(f"unknown status code number {code}")
    name = getattr(code, "name", code)  # grpc.StatusCode is an Enum whose names are the canonical ones
    if isinstance(name, str):
        upper = name.strip().upper()
        if upper in CODES:
            return upper
    raise ValueError(f"unknown status code {code!r}; expected one of {', '.join(CODES)}")


def http_status_for(code: Any) -> int:
    """HTTP status of a gRPC status code (500 for codes the table does not list)."""
    return HTTP_STATUS.get(code_name(code), 500)


class ServingError(Exception):
    """A failed serving call: ``code`` (gRPC status name, e.g. "NOT_FOUND"), ``message``, ``http_status``."""

    code: str = "UNKNOWN"

    def __init__(self, message: str = "", code: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code_name(code)
        elif type(self) is ServingError:
            self.code = "UNKNOWN"

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    @property
    def grpc_code(self) -> Any:
        """The ``grpc.StatusCode`` member (for servers: ``context.abort(err.grpc_code, err.message)``)."""
        import grpc

        return grpc.StatusCode[self.code]

    def as_dict(self) -> dict[str, str]:
        """The wire shape's inner object: ``{"code": ..., "message": ...}``."""
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (error_for, (self.code, self.message))


class Cancelled(ServingError):
    code = "CANCELLED"


class Unknown(ServingError):
    code = "UNKNOWN"


class InvalidArgument(ServingError):
    code = "INVALID_ARGUMENT"


class DeadlineExceeded(ServingError):
    code = "DEADLINE_EXCEEDED"


class NotFound(ServingError):
    code = "NOT_FOUND"


class AlreadyExists(ServingError):
    code = "ALREADY_EXISTS"


class PermissionDenied(ServingError):
    code = "PERMISSION_DENIED"


class ResourceExhausted(ServingError):
    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(ServingError):
    code = "FAILED_PRECONDITION"


class Aborted(ServingError):
    code = "ABORTED"


class OutOfRange(ServingError):
    code = "OUT_OF_RANGE"


class Unimplemented(ServingError):
    code = "UNIMPLEMENTED"


class Internal(ServingError):
    code = "INTERNAL"


class Unavailable(ServingError):
    code = "UNAVAILABLE"


class DataLoss(ServingError):
    code = "DATA_LOSS"


class Unauthenticated(ServingError):
    code = "UNAUTHENTICATED"


_CLASSES: dict[str, type[ServingError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_for(code: Any, message: str = "") -> ServingError:
    """The typed error for a status code (name, number or grpc.StatusCode). ``OK`` is not an error: ValueError."""
    name = code_name(code)
    if name == "OK":
        raise ValueError("status OK is not an error")
    return _CLASSES[name](message)


def from_rpc_error(error: Exception) -> ServingError:
    """Translate a ``grpc.RpcError`` (a failed call: ``.code()``, ``.details()``) into its typed ServingError.

    Call sites chain it: ``raise from_rpc_error(e) from e``. An RpcError without a status becomes UNKNOWN.
    """
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    code = code_fn() if callable(code_fn) else None
    message = details_fn() if callable(details_fn) else None
    if message is None:
        message = str(error)
    try:
        name = code_name(code) if code is not None else "UNKNOWN"
    except ValueError:
        name = "UNKNOWN"
    if name == "OK":  # a call that failed without a status (should not happen); never return "OK" as an error
        name = "UNKNOWN"
    return error_for(name, message)
