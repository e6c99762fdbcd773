"""The ``page`` blueprint: the single-page UI at ``/`` and its assets under ``/static``.

The page is plain HTML, CSS and JavaScript (``explain_api/static``) that calls the API from the browser; it asks for
an API key itself when the server wants one, so neither route needs a key.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

__all__ = ["STATIC_DIR", "blueprint"]

STATIC_DIR = Path(__file__).parent / "static"

blueprint = Blueprint("page", __name__, static_folder=str(STATIC_DIR), static_url_path="/static")


@blueprint.get("/")
def index() -> Response:
    response = Response((STATIC_DIR / "index.html").read_bytes(), mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return response
