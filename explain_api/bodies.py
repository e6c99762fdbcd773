"""Request bodies read under the size limit whatever their framing, before any view parses them.

Werkzeug enforces ``MAX_CONTENT_LENGTH`` on a declared ``Content-Length``, but a chunked body (no length) is only
wrapped in a stream that stops at the limit: ``get_data()`` then returns the first ``limit`` bytes as if they were the
whole body, and a valid image followed by junk parses as the image. ``buffer_body`` closes that gap at the edge, in
the request hook, before any view runs:

- a declared length over the limit: refused before a byte is read;
- a chunked body: read in 64 KiB pieces into one buffer while counting; the first piece that would cross the limit
  is dropped and the request refused, so memory never holds more than the limit; a body within the limit is handed
  on as an ordinary body with its ``Content-Length``.

A refused body is drained (read and discarded, at most ``drain_limit`` more bytes) before the answer, so that the
client, which is usually still sending, reads the 413 instead of a connection reset. The refusal is the domain error
``RequestTooLarge``; ``explain_api.errors`` turns it into the 413 of the wire shape.
"""

from __future__ import annotations

import io
from collections.abc import MutableMapping
from typing import Any

from explain_api.exceptions import RequestTooLarge

__all__ = ["BODY_METHODS", "buffer_body", "declared_length"]

# Methods whose bodies are read (others keep their stream untouched).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_PIECE = 64 * 1024


def declared_length(environ: MutableMapping[str, Any]) -> int | None:
    """The body length the client declared (``Content-Length``), None when it declared none or sent it chunked."""
    if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
        return None
    raw = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not raw.isdigit():
        return None
    return int(raw)


def _drain(stream: Any, limit: int) -> None:
    """Read and discard at most ``limit`` bytes (what the client is still sending)."""
    left = limit
    while left > 0:
        try:
            piece = stream.read(min(_PIECE, left))
        except (OSError, ValueError):
            return
        if not piece:
            return
        left -= len(piece)


def _too_large(limit: int, what: str) -> RequestTooLarge:
    return RequestTooLarge(f"request body too large ({what}); the limit is {limit} bytes")


def buffer_body(environ: MutableMapping[str, Any], limit: int, *, drain_limit: int | None = None) -> None:
    """Enforce ``limit`` on the request body of ``environ`` (a WSGI environment), whatever its framing.

    Raises ``RequestTooLarge`` for a body over the limit (after draining at most ``drain_limit`` bytes of it, default
    ``limit``). A chunked body within the limit replaces ``wsgi.input`` as a buffer with its ``Content-Length``. Other
    requests are left as they are (the declared length is enforced by the stream Werkzeug builds).
    """
    if str(environ.get("REQUEST_METHOD", "")).upper() not in BODY_METHODS:
        return
    drain_limit = limit if drain_limit is None else drain_limit
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    length = declared_length(environ)
    if length is not None:
        if length > limit:
            _drain(stream, min(length, drain_limit))
            raise _too_large(limit, f"Content-Length {length}")
        return
    if "chunked" not in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
        return  # no body announced: nothing to read
    buffer = io.BytesIO()
    size = 0
    while True:
        piece = stream.read(_PIECE)
        if not piece:
            break
        if size + len(piece) > limit:
            _drain(stream, drain_limit)
            raise _too_large(limit, f"more than {limit} bytes sent chunked")
        buffer.write(piece)
        size += len(piece)
    buffer.seek(0)
    environ["wsgi.input"] = buffer
    environ["CONTENT_LENGTH"] = str(size)
    environ.pop("HTTP_TRANSFER_ENCODING", None)
