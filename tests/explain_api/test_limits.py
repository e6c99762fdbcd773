"""The request body limit for every framing (``bodies``), the process's memory budget (``budget``) and the allocator
settings (``allocator``), as units; the same limits against a real gunicorn worker are in ``test_live_limits.py``."""

from __future__ import annotations

import io
import threading
import time

import pytest

from explain_api.allocator import ALLOCATOR_SETTINGS, release_free_memory, tune_allocator
from explain_api.bodies import buffer_body, declared_length
from explain_api.budget import MemoryBudget
from explain_api.config import ApiConfig, ConfigError
from explain_api.exceptions import Overloaded, RequestTooLarge
from tests.rendering.conftest import solid


class _Stream(io.BytesIO):
    """A body stream that counts what was read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        piece = super().read(size)
        self.taken += len(piece)
        return piece


def _environ(data: bytes, **extra: str) -> dict:
    return {"REQUEST_METHOD": "POST", "wsgi.input": _Stream(data), **extra}


def test_a_chunked_body_within_the_limit_becomes_an_ordinary_body() -> None:
    env = _environ(b"x" * 1000, HTTP_TRANSFER_ENCODING="chunked")
    assert declared_length(env) is None
    buffer_body(env, 1000)
    assert env["CONTENT_LENGTH"] == "1000" and "HTTP_TRANSFER_ENCODING" not in env
    assert env["wsgi.input"].read() == b"x" * 1000 and declared_length(env) == 1000


def test_a_chunked_body_over_the_limit_is_refused_without_holding_it() -> None:
    env = _environ(b"x" * (5 * 65536 + 1), HTTP_TRANSFER_ENCODING="chunked")
    stream = env["wsgi.input"]
    with pytest.raises(RequestTooLarge, match="the limit is 262144 bytes"):
        buffer_body(env, 4 * 65536, drain_limit=10)
    assert env["wsgi.input"] is stream  # nothing handed on
    assert stream.taken <= 5 * 65536 + 10  # read while counting, then at most drain_limit more


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    env = _environ(b"x" * 100, CONTENT_LENGTH="101")
    with pytest.raises(RequestTooLarge, match="Content-Length 101"):
        buffer_body(env, 100, drain_limit=0)
    assert env["wsgi.input"].taken == 0


@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
def test_bodies_of_other_methods_and_declared_bodies_are_left_alone(method: str) -> None:
    env = _environ(b"abc", HTTP_TRANSFER_ENCODING="chunked", REQUEST_METHOD=method)
    buffer_body(env, 1)
    assert env["wsgi.input"].taken == 0
    env = _environ(b"abc", CONTENT_LENGTH="3")
    buffer_body(env, 3)
    assert env["wsgi.input"].taken == 0 and env["CONTENT_LENGTH"] == "3"


def test_chunked_bodies_through_the_app_get_the_json_413(make_app) -> None:
    app = make_app(max_body_bytes=1000)
    client = app.test_client()
    big = client.post(
        "/v1/models/tiny:explain",
        input_stream=io.BytesIO(solid((200, 0, 0)) + b"\0" * 2000),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "image/png"},
    )
    assert big.status_code == 413 and big.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "1000 bytes" in big.get_json()["error"]["message"]
    small = client.post(
        "/v1/models/tiny:predict",
        input_stream=io.BytesIO(solid((200, 0, 0))),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "image/png"},
    )
    assert small.status_code == 200, small.get_json()


# ------------------------------------------------------------------------------------------------------- budget


def test_budget_leases_grow_shrink_and_release() -> None:
    budget = MemoryBudget(100, wait_s=0)
    with budget.lease() as a:
        a.grow(60)
        b = budget.lease()
        with pytest.raises(Overloaded, match="busy"):
            b.grow(50)
        assert budget.used == 60 and b.held == 0
        a.resize(10)
        b.grow(50)
        assert budget.used == 60 and a.peak == 60
        b.release()
    assert budget.used == 0 and budget.peak == 60


def test_a_lease_over_the_whole_budget_is_refused_at_once() -> None:
    budget = MemoryBudget(100, wait_s=30)
    start = time.monotonic()
    with pytest.raises(Overloaded, match="send fewer or smaller images"):
        budget.lease().grow(101)
    assert time.monotonic() - start < 1


def test_a_waiting_lease_gets_the_room_another_gives_back() -> None:
    budget = MemoryBudget(100, wait_s=10)
    first = budget.lease()
    first.grow(80)
    threading.Timer(0.2, first.release).start()
    second = budget.lease()
    second.grow(50)  # waits for the release
    assert budget.used == 50
    second.release()


def test_busy_budget_is_a_503_with_retry_after(make_app, chelsea_png: bytes) -> None:
    app = make_app(memory_budget_bytes=200 * 2**20, max_decode_bytes=100 * 2**20, budget_wait_s=0)
    held = app.extensions["glimpse"].budget.lease()
    held.grow(200 * 2**20 - 4096)
    try:
        r = app.test_client().post("/v1/models/tiny:explain", data=chelsea_png, content_type="image/png")
    finally:
        held.release()
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
    assert r.get_json()["error"]["code"] == "UNAVAILABLE" and "busy" in r.get_json()["error"]["message"]
    assert app.extensions["glimpse"].budget.used == 0  # every lease given back


def test_an_image_over_the_decode_limit_is_413(make_app) -> None:
    app = make_app(max_decode_bytes=1024 * 1024, memory_budget_bytes=2**21)
    r = app.test_client().post("/v1/models/tiny:explain", data=solid((1, 2, 3), (600, 600)), content_type="image/png")
    assert r.status_code == 413 and "the limit is 1 MB" in r.get_json()["error"]["message"]


def test_config_keeps_one_image_within_the_budget() -> None:
    with pytest.raises(ConfigError, match="one image must fit"):
        ApiConfig(memory_budget_bytes=10, max_decode_bytes=11)
    env = {"GLIMPSE_MEMORY_BUDGET_BYTES": "300000000", "GLIMPSE_MAX_IMAGE_SIDE": "512", "GLIMPSE_BUDGET_WAIT_S": "0.5"}
    config = ApiConfig.from_env(env)
    assert (config.memory_budget_bytes, config.max_image_side, config.budget_wait_s) == (300_000_000, 512, 0.5)


def test_allocator_settings_apply_on_glibc() -> None:
    assert set(ALLOCATOR_SETTINGS) == {-1, -3, -8}
    assert tune_allocator() is True and release_free_memory() is True
