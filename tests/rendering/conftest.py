"""Pictures for the rendering tests (and the API tests, which upload the same): real photos and hand-made images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

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
