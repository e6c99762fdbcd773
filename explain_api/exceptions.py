"""The explain API's domain errors: what a prediction or explanation request can get wrong, without HTTP.

``service`` and the video code raise these (besides ``rendering.errors`` for pictures and
``glimpse_wire.errors.ServingError`` from the model server). They carry a ``message`` for the user and no status:
``explain_api.errors`` maps them to HTTP statuses in one table, ``glimpse explain-video`` to exit codes.

- ``InvalidParameter``: a request value that cannot be used (a parameter's type or range, a target, a version label).
- ``UnknownMethod``: an explanation method that does not exist (an ``InvalidParameter``).
- ``TooMuchWork``: a request that would cost more model calls than allowed (e.g. too many occlusion patches).
- ``UnsupportedModel``: the model cannot do what was asked (no image input, no signature for the method).
- ``BadModelOutput``: the model server answered with outputs of the wrong shape or type (its fault, not the user's).
- ``RequestTooLarge``: a request body over the body limit, whether it declared its length or came chunked.
- ``Overloaded``: the images in flight already use the process's memory budget; the request may be sent again later.
"""

from __future__ import annotations

__all__ = [
    "BadModelOutput",
    "ExplainError",
    "InvalidParameter",
    "Overloaded",
    "RequestTooLarge",
    "TooMuchWork",
    "UnknownMethod",
    "UnsupportedModel",
]


class ExplainError(Exception):
    """Base of the explain API's domain errors; ``message`` says what is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidParameter(ExplainError):
    """A request value that cannot be used."""


class UnknownMethod(InvalidParameter):
    """An explanation method name that is not one of ``glimpse_wire.contract.EXPLAIN_METHODS``."""


class TooMuchWork(ExplainError):
    """A request over a work limit (model calls per image)."""


class UnsupportedModel(ExplainError):
    """The served model cannot answer this request (a missing signature or input)."""


class BadModelOutput(ExplainError):
    """The model server returned outputs that do not match the model contract."""


class RequestTooLarge(ExplainError):
    """A request body over ``ApiConfig.max_body_bytes`` (declared or sent chunked)."""


class Overloaded(ExplainError):
    """The decoded images in flight fill the memory budget (``ApiConfig.max_decode_bytes_in_flight``): try later."""
