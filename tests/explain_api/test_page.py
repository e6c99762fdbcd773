"""The web page in headless Chromium (Debian's, driven by Playwright), served over real HTTP.

Here the page and the API run against the fake serving client (a test of the page layer); the same session runs
against a real `glimpse serve` stack in test_integration.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glimpse_wire import contract as c
from tests.explain_api.browser import chromium, serve_http
from tests.explain_api.browser import run_page_session as _session
from tests.explain_api.fakes import FakeServing
from tests.rendering.conftest import encode

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def photo(tmp_path: Path, chelsea: np.ndarray) -> Path:
    path = tmp_path / "chelsea.png"
    path.write_bytes(encode(chelsea))
    return path


@pytest.fixture
def second(chelsea: np.ndarray) -> bytes:
    return encode(np.ascontiguousarray(chelsea[::-1, ::-1]))


def test_page_session(make_app, photo: Path, second: bytes, tmp_path: Path) -> None:
    with serve_http(make_app()) as base, chromium() as browser:
        _session(browser, base, photo, second, labels=3, methods_ok=len(c.EXPLAIN_METHODS), tmp_path=tmp_path)


def test_page_with_a_blackbox_model(make_app, photo: Path, second: bytes, tmp_path: Path) -> None:
    with serve_http(make_app(FakeServing(methods=()))) as base, chromium() as browser:
        _session(browser, base, photo, second, labels=3, methods_ok=1, tmp_path=tmp_path)


def test_page_asks_for_the_key(make_app, photo: Path) -> None:
    with serve_http(make_app(api_keys=("s3cret",))) as base, chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.goto(base + "/")
        page.wait_for_selector("#auth:not([hidden])")
        assert page.eval_on_selector("#model", "s => s.options.length") == 0
        page.fill("#api-key", "s3cret")
        page.click("#auth-form button")
        page.wait_for_function("document.querySelector('#model').options.length === 1")
        page.set_input_files("#file", str(photo))
        page.wait_for_function("document.querySelectorAll('#predictions li').length === 3")
        page.close()
