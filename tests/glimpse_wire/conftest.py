"""Fixtures of the wire package tests: one in-process fake TF Serving server per session, reset for each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from glimpse_wire.client import ClientConfig, ServingClient
from tests.glimpse_wire.fake_serving import FakeServing


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[FakeServing]:
    server = FakeServing().start()
    yield server
    server.stop()


@pytest.fixture
def fake(_fake_server: FakeServing) -> Iterator[FakeServing]:
    _fake_server.reset()
    yield _fake_server
    _fake_server.reset()


@pytest.fixture
def client(fake: FakeServing) -> Iterator[ServingClient]:
    with ServingClient(ClientConfig(address=fake.address, timeout_s=5.0, retries=3, backoff_s=0.01)) as c:
        yield c
