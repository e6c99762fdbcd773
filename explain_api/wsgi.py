"""WSGI entry for ``gunicorn explain_api.wsgi:app``: the app configured from the environment (see ``ApiConfig``)."""

from __future__ import annotations

from explain_api.allocator import tune_allocator
from explain_api.app import create_app
from explain_api.config import ApiConfig

__all__ = ["app"]

tune_allocator()
app = create_app(ApiConfig.from_env())
