"""Helpers of the page tests: serve an app over real HTTP in a thread, drive headless Debian Chromium."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from werkzeug.serving import make_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def serve_http(app) -> Iterator[str]:
    """The app on a free 127.0.0.1 port (threaded werkzeug server); yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def chromium() -> Iterator[object]:
    """A Playwright browser on /usr/bin/chromium (skips when it or Playwright is missing)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (/usr/bin/chromium); apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


def drop_file(page, selector: str, data: bytes, name: str, mime: str) -> None:
    """Drop a file on an element the way a user's drag and drop does (a DataTransfer with a File)."""
    transfer = page.evaluate_handle(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: mime }));
            return dt;
        }""",
        [base64.b64encode(data).decode("ascii"), name, mime],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def run_page_session(
    browser, base: str, photo: Path, second: bytes, *, labels: int, methods_ok: int, tmp_path: Path
) -> None:
    """What a user does on the page, with checks at each step. ``second``: another PNG, dropped at the end;
    ``labels``: predictions expected in the top list (min(5, classes)); ``methods_ok``: how many of the methods
    (the class-attribution methods and activations) the model can answer."""
    from PIL import Image

    from glimpse_wire import contract as c

    errors: list[str] = []
    page = browser.new_page(accept_downloads=True)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(60_000)
    page.goto(base + "/")
    page.wait_for_function(f"document.querySelectorAll('#method option').length === {len(c.EXPLAIN_METHODS)}")
    enabled = page.eval_on_selector_all("#method option:not([disabled])", "els => els.map(e => e.value)")
    assert len(enabled) == methods_ok
    attribution_ok = len([m for m in enabled if m in c.ATTRIBUTION_METHODS])
    assert page.is_hidden("#layer-field")
    with Image.open(photo) as im:
        width, height = im.size

    # Upload through the file input: top predictions and the overlay at the photo's own size.
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_function(f"document.querySelectorAll('#predictions li').length === {labels}")
    page.wait_for_function("document.querySelector('#overlay img').naturalWidth > 0")
    natural = page.eval_on_selector("#overlay img", "img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [width, height]
    href = page.get_attribute("#download-overlay", "href")
    assert href.startswith("data:image/jpeg;base64,")

    # Download the original | heatmap | overlay grid.
    with page.expect_download() as info:
        page.click("#download-grid")
    grid_path = tmp_path / "grid.png"
    info.value.save_as(grid_path)
    with Image.open(grid_path) as grid:
        assert grid.size == (3 * width + 2 * 4, height)

    # Activations: the layer field appears, the figure shows the channel grid of the chosen layer.
    if c.ACTIVATIONS_METHOD in enabled:
        page.select_option("#method", c.ACTIVATIONS_METHOD)
        page.wait_for_function("document.querySelector('#overlay figcaption').textContent.startsWith('activations')")
        assert page.is_visible("#layer-field")
        caption = page.text_content("#overlay figcaption")
        page.fill("#layer", "0")
        page.dispatch_event("#layer", "change")
        page.wait_for_function("document.querySelector('#overlay figcaption').textContent.includes('of layer 0 ')")
        assert page.text_content("#overlay figcaption") != caption
        page.wait_for_function("document.querySelector('#overlay img').naturalWidth >= 256")
        assert page.get_attribute("#download-overlay", "download").endswith(".png")

    # Another method re-explains.
    page.select_option("#method", "occlusion")
    page.wait_for_function("document.querySelector('#overlay figcaption').textContent.startsWith('occlusion')")

    # Compare every class-attribution method side by side.
    page.click("#compare")
    page.wait_for_function(
        "document.querySelectorAll('#compare-grid .card.ok, #compare-grid .card.failed').length === "
        f"{len(c.ATTRIBUTION_METHODS)}"
    )
    assert page.eval_on_selector_all("#compare-grid .card.ok img", "els => els.length") == attribution_ok
    failed = page.eval_on_selector_all("#compare-grid .card.failed", "els => els.map(e => e.textContent)")
    assert all("glimpse export" in text for text in failed)

    # Drag and drop a second picture.
    before = page.get_attribute("#download-overlay", "href")
    drop_file(page, "#drop", second, "dropped.png", "image/png")
    page.wait_for_function("document.querySelector('#compare-grid').children.length === 0")
    page.wait_for_function(f"document.querySelector('#download-overlay').href !== {before!r}")
    page.close()
    assert [e for e in errors if "422" not in e] == [], errors
