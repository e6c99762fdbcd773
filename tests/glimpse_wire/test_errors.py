"""The gRPC code -> typed error -> HTTP status table."""

from __future__ import annotations

import pickle

import grpc
import pytest

from glimpse_wire import errors as e

EXPECTED_HTTP = {
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
    "UNKNOWN": 500,
    "INTERNAL": 500,
    "ABORTED": 500,
    "DATA_LOSS": 500,
}

EXPECTED_CLASS = {
    "INVALID_ARGUMENT": e.InvalidArgument,
    "NOT_FOUND": e.NotFound,
    "FAILED_PRECONDITION": e.FailedPrecondition,
    "RESOURCE_EXHAUSTED": e.ResourceExhausted,
    "UNIMPLEMENTED": e.Unimplemented,
    "UNAVAILABLE": e.Unavailable,
    "DEADLINE_EXCEEDED": e.DeadlineExceeded,
    "INTERNAL": e.Internal,
    "PERMISSION_DENIED": e.PermissionDenied,
    "UNAUTHENTICATED": e.Unauthenticated,
    "CANCELLED": e.Cancelled,
    "UNKNOWN": e.Unknown,
}


class _FailedCall(grpc.RpcError):
    """What a failed unary call raises: an RpcError that is also a grpc.Call (code(), details())."""

    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details


@pytest.mark.parametrize("code,status", sorted(EXPECTED_HTTP.items()))
def test_http_status_table(code: str, status: int) -> None:
    assert e.HTTP_STATUS.get(code, 500) == status
    assert e.http_status_for(code) == status
    assert e.error_for(code, "m").http_status == status


def test_every_grpc_status_code_has_a_typed_error() -> None:
    for status_code in grpc.StatusCode:
        if status_code is grpc.StatusCode.OK:
            continue
        err = e.error_for(status_code, "msg")
        assert err.code == status_code.name
        assert err.grpc_code is status_code
        assert e.CODES[err.code] == status_code.value[0]


@pytest.mark.parametrize("code,cls", sorted(EXPECTED_CLASS.items()))
def test_error_for_picks_the_subclass(code: str, cls: type[e.ServingError]) -> None:
    err = e.error_for(code, "the message")
    assert type(err) is cls
    assert isinstance(err, e.ServingError)
    assert (err.code, err.message) == (code, "the message")
    assert err.as_dict() == {"code": code, "message": "the message"}
    assert str(err) == f"{code}: the message"


@pytest.mark.parametrize("given", ["NOT_FOUND", "not_found", 5, grpc.StatusCode.NOT_FOUND])
def test_code_forms_are_normalised(given: object) -> None:
    assert e.code_name(given) == "NOT_FOUND"
    assert isinstance(e.error_for(given, "x"), e.NotFound)


@pytest.mark.parametrize("bad", ["NOPE", 99, None, True, 3.0])
def test_unknown_codes_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        e.code_name(bad)


def test_ok_is_not_an_error() -> None:
    with pytest.raises(ValueError, match="OK"):
        e.error_for("OK", "fine")


def test_from_rpc_error_keeps_code_and_details() -> None:
    rpc = _FailedCall(grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "x" not found.')
    err = e.from_rpc_error(rpc)
    assert isinstance(err, e.FailedPrecondition)
    assert err.message == 'Serving signature key "x" not found.'
    assert err.http_status == 400


def test_from_rpc_error_without_a_status_is_unknown() -> None:
    err = e.from_rpc_error(grpc.RpcError("no status at all"))
    assert isinstance(err, e.Unknown)
    assert "no status at all" in err.message
    assert isinstance(e.from_rpc_error(_FailedCall(grpc.StatusCode.OK, None)), e.Unknown)


def test_base_error_with_a_code() -> None:
    base = e.ServingError("exists", code="ALREADY_EXISTS")
    assert (base.code, base.http_status) == ("ALREADY_EXISTS", 409)
    assert e.ServingError("x").code == "UNKNOWN"


def test_errors_survive_pickling_as_their_typed_class() -> None:
    back = pickle.loads(pickle.dumps(e.NotFound("missing")))
    assert (type(back), back.code, back.message) == (e.NotFound, "NOT_FOUND", "missing")
    back = pickle.loads(pickle.dumps(e.ServingError("exists", code="ALREADY_EXISTS")))
    assert (type(back), back.message) == (e.AlreadyExists, "exists")
