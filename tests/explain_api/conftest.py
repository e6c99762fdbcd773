"""Fixtures of the explain API tests: the fake serving client, apps built on it, real photos as upload bytes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from explain_api.app import create_app
from explain_api.config import ApiConfig
from tests.explain_api.fakes import FakeServing

# The photo fixtures and image helpers are the rendering tests'; the API tests upload the same pictures.
from tests.rendering.conftest import chelsea, chelsea_jpeg, chelsea_png, encode, solid, tux_photo  # noqa: F401


@pytest.fixture
def fake() -> FakeServing:
    return FakeServing()


@pytest.fixture
def make_app(fake: FakeServing) -> Callable[..., Flask]:
    """Build an app on the fake; keyword arguments are ApiConfig settings."""

    def build(client: object | None = None, **settings: object) -> Flask:
        settings.setdefault("default_model", "tiny")
        app = create_app(ApiConfig(**settings), client if client is not None else fake)
        app.testing = True
        return app

    return build


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask):
    return app.test_client()
