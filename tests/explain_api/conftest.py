"""Fixtures of the explain API tests: the fake serving client, apps built on it, real photos as upload bytes."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from PIL import Image

from explain_api.app import create_app
from explain_api.config import ApiConfig
from tests.explain_api.fakes import FakeServing

TUX_STAMPS = Path("/usr/share/tuxpaint/stamps")


def encode(array_or_image: np.ndarray | Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    im = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


def solid(color: tuple[int, int, int], size: tuple[int, int] = (60, 40), fmt: str = "PNG") -> bytes:
    """An image of one colour; size is (width, height)."""
    return encode(Image.new("RGB", size, color), fmt)


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    import skimage.data

    return skimage.data.chelsea()


@pytest.fixture(scope="session")
def chelsea_png(chelsea: np.ndarray) -> bytes:
    return encode(chelsea, "PNG")


@pytest.fixture(scope="session")
def chelsea_jpeg(chelsea: np.ndarray) -> bytes:
    return encode(chelsea, "JPEG", quality=90)


@pytest.fixture(scope="session")
def tux_photo() -> bytes:
    """A real RGBA cut-out photo from Tux Paint's stamps (skips when the Debian package is absent)."""
    candidates = sorted(TUX_STAMPS.glob("animals/birds/*.png"))
    if not candidates:
        pytest.skip("tuxpaint-stamps-default is not installed (/usr/share/tuxpaint/stamps)")
    return candidates[0].read_bytes()


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
