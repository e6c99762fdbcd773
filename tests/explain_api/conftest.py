"""Fixtures of the explain API tests: the fake serving client, apps built on it, real photos as upload bytes, and
the real processes (one `glimpse serve` with the exported tiny model, one `glimpse api` under gunicorn in front of
it), each started once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from explain_api.app import create_app
from explain_api.config import ApiConfig
from tests.conftest import _free_port
from tests.explain_api.fakes import FakeServing
from tests.explain_api.servers import LiveApi, Served, model_config, start_api, start_serving, stop, wait_available

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


@pytest.fixture(scope="session")
def served(exported_model, tmp_path_factory) -> Iterator[Served]:
    """One `glimpse serve` for the session, with the exported model and a version label."""
    tmp = tmp_path_factory.mktemp("served")
    version = int(Path(exported_model.version_dir).name)
    base = Path(exported_model.version_dir).parent
    config_file = tmp / "models.config"
    config_file.write_text(model_config(exported_model.name, base, version))
    port = _free_port()
    log = tmp / "serving.log"
    proc = start_serving(config_file, port, log)
    address = f"127.0.0.1:{port}"
    try:
        wait_available(address, exported_model.name, proc, log)
        yield Served(address, exported_model.name, version, tuple(exported_model.class_names), config_file, port)
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def live_api(served: Served, tmp_path_factory) -> Iterator[LiveApi]:
    """`glimpse api` (gunicorn, one gthread worker of 8 threads, the default limits) in front of ``served``."""
    log = tmp_path_factory.mktemp("live_api") / "api.log"
    api = start_api(served.address, served.name, _free_port(), log, "--timeout", "60")
    try:
        yield api
    finally:
        stop(api.proc)
