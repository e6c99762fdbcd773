"""What can go wrong when pictures and videos are read or written, as exception types (no transport in sight).

The rendering package decodes what users send and draws what they get back; it does not know who called it. Its
failures are therefore typed by what went wrong, never by an HTTP status or an exit code: the explain API maps them to
responses in one table (``explain_api.errors``), the command line to exit codes. Every error carries ``message``, a
sentence meant for the person who sent the file.

- ``RenderingError``: the base of everything below.
- ``ImageError``: a still image that cannot be used: ``InvalidImage`` (not an image, truncated, corrupt, no pixels),
  ``UnsupportedFormat`` (a file of a format that is not read), ``ImageTooLarge`` (over a pixel limit).
- ``VideoError``: a clip that cannot be used: ``InvalidVideo`` (not a video, a still image, corrupt, no frames, an
  output name of an unknown container), ``VideoTooLarge`` (over a byte, frame, duration or frame-size limit), and
  ``EncoderError`` (the encoder itself failed: a fault of the machine, not of the input; also a ``RuntimeError``).
"""

from __future__ import annotations

__all__ = [
    "EncoderError",
    "ImageError",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidVideo",
    "RenderingError",
    "UnsupportedFormat",
    "VideoError",
    "VideoTooLarge",
]


class RenderingError(Exception):
    """Base of the rendering package's errors; ``message`` says what is wrong with the input."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ImageError(RenderingError):
    """A still image that cannot be used."""


class InvalidImage(ImageError):
    """Not a complete, decodable image (empty, truncated, corrupt, no pixels)."""


class UnsupportedFormat(InvalidImage):
    """A file that is not one of the accepted image formats."""


class ImageTooLarge(ImageError):
    """An image (or the images of one request together) over a pixel limit."""


class VideoError(RenderingError):
    """A clip that cannot be used or written."""


class InvalidVideo(VideoError):
    """Not a decodable video (or a still image, an empty or corrupt file, an unknown output container)."""


class VideoTooLarge(VideoError):
    """A clip over a limit: bytes, frames, seconds or pixels per frame."""


class EncoderError(VideoError, RuntimeError):
    """The video encoder failed (disk full, ffmpeg died): not the input's fault."""
