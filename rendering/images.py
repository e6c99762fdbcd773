"""Decode and validate uploaded images with Pillow, before anything is sent to the model server.

Every failure is a ``rendering.errors.ImageError``: ``ImageTooLarge`` for images over the pixel limit (decompression
bombs included), ``UnsupportedFormat`` for files of another format, ``InvalidImage`` for anything else that is not a
complete JPEG/PNG/GIF/BMP/WebP image. Accepted images come out as RGB ``uint8`` arrays in
their displayed orientation (EXIF applied, alpha composited on white, CMYK/16-bit/grey converted), and are
re-encoded as PNG for the model's ``image_bytes`` input (which decodes JPEG/PNG/GIF/BMP, not WebP).

Memory: Pillow holds a decoded image at 1 (modes 1, L, P), 2 (16-bit grey) or 4 bytes per pixel (everything else),
so a few kilobytes of PNG can ask for 160 MB. ``inspect_image`` reads the header only and says what decoding will
cost (``ImageHeader.decode_bytes``), so that a caller can bound the memory of the decodes in flight before it starts
one. With ``max_side`` the image comes out no larger than needed: a JPEG is decoded at a reduced scale straight away
(Pillow's ``draft``: the DCT is scaled by 1/2, 1/4 or 1/8), any other format is converted and box-reduced in strips
of rows, so that only the decoder's own buffer is ever full size.

``pad_box`` and ``resize_with_pad`` mirror ``tf.image.resize_with_pad``: the geometry that the served model applies to
its input, needed to undo the padding of a heatmap and to build occluded copies at the model's input size.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from rendering.errors import ImageError, ImageTooLarge, InvalidImage, UnsupportedFormat

__all__ = [
    "ALLOWED_FORMATS",
    "DecodedImage",
    "ImageHeader",
    "PadBox",
    "decode_bytes_per_pixel",
    "decode_image",
    "decode_images",
    "encode_jpeg",
    "encode_png",
    "fit_size",
    "inspect_image",
    "pad_box",
    "resize_with_pad",
    "serving_png",
    "to_rgb",
]

# Pillow format ids accepted (its JPEG opener also yields "MPO", the multi-picture JPEGs of cameras).
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP"
_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    """An accepted upload: RGB pixels as displayed, plus where it came from."""

    rgb: np.ndarray  # uint8 [height, width, 3]
    format: str  # Pillow's format id, e.g. "JPEG"
    n_bytes: int  # size of the upload
    # The upload itself when the model decodes it to exactly these pixels (a plain RGB JPEG or PNG, no EXIF
    # rotation, no transparency, not shrunk): then it is sent as is, not re-encoded.
    original: bytes | None = field(default=None, repr=False)
    # (width, height) of the upload as displayed, when ``rgb`` was shrunk to ``max_side``; None = the size of ``rgb``.
    source_size: tuple[int, int] | None = None

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def source_width(self) -> int:
        """Width of the upload as displayed (``width`` unless the pixels were shrunk)."""
        return self.source_size[0] if self.source_size is not None else self.width

    @property
    def source_height(self) -> int:
        return self.source_size[1] if self.source_size is not None else self.height


@dataclass(frozen=True)
class ImageHeader:
    """What an upload's header says: its size and mode, and the bytes Pillow will allocate to decode it."""

    format: str
    mode: str
    width: int
    height: int
    decode_bytes: int  # the decoder's buffer, at the reduced JPEG scale when max_side allows one

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class PadBox:
    """Where the resized image sits inside the padded model input (``tf.image.resize_with_pad``)."""

    top: int
    left: int
    height: int
    width: int


def _open(data: bytes) -> Image.Image:
    # Pillow warns above Image.MAX_IMAGE_PIXELS (and raises above twice that): the configured max_pixels decides
    # instead, so the warning is swallowed here; the error still comes through.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))


# Bytes per pixel of Pillow's storage by mode (every mode not listed takes 4).
_STORAGE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Rows of the full-size image converted at once while shrinking (times the reduction factor).
_STRIP_ROWS = 128
# Bytes per pixel of the shrunk result while it is built (RGB strips, their reductions, the final resize).
_WORKING_BYTES = 12


def decode_bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of a decoded image of Pillow ``mode``."""
    return _STORAGE_BYTES.get(mode, 4)


def fit_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down (aspect kept) so that the longer side is at most ``max_side``."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def inspect_image(data: bytes, *, max_side: int | None = None) -> ImageHeader | None:
    """The header of an upload, without decoding its pixels; None when it cannot be read (``decode_image`` then says
    why). ``decode_bytes`` is the decoder's buffer plus the shrunk copy being built, at the JPEG draft scale that
    ``decode_image`` will use with the same ``max_side``."""
    try:
        with _open(data) as im:
            fmt, mode, (width, height) = im.format or "?", im.mode, im.size
            if fmt in ("JPEG", "MPO") and max_side is not None:
                im.draft("RGB", fit_size(width, height, max_side))
            stored_w, stored_h = im.size
            stored_mode = im.mode
    except Exception:
        return None
    out_w, out_h = fit_size(stored_w, stored_h, max_side)
    cost = stored_w * stored_h * decode_bytes_per_pixel(stored_mode) + out_w * out_h * _WORKING_BYTES
    return ImageHeader(format=fmt, mode=mode, width=int(width), height=int(height), decode_bytes=int(cost))


def to_rgb(im: Image.Image, *, wide: bool | None = None) -> Image.Image:
    """RGB pixels of any mode: alpha composited on white, 16/32-bit grey scaled to 8 bits (``wide``: whether 32-bit
    integer grey spans more than 0-255; None = decide from these pixels)."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if wide is None:
            wide = mode == "I" and bool(arr.size) and arr.max() > 255
        if mode.startswith("I;16") or (mode == "I" and wide):
            arr = arr / 257.0
        elif mode == "F" and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([grey] * 3, axis=-1))
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return im.convert("RGB")
    return im


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value) if value in _TRANSPOSE else 1
    except Exception:  # unreadable EXIF: keep the stored orientation rather than reject the photo
        return 1


def _shrunk_rgb(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``im`` (loaded, any mode) as RGB of ``size``: converted and box-reduced in strips of rows, then resized, so
    that no full-size copy beside the decoder's buffer is ever made."""
    width, height = im.size
    factor = max(1, min(width // size[0], height // size[1]))
    wide = None
    if im.mode == "I":
        extrema = im.getextrema()
        wide = bool(extrema[1] > 255) if isinstance(extrema, tuple) else None
    if factor == 1:
        return to_rgb(im, wide=wide).resize(size, Image.Resampling.LANCZOS)
    reduced = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    rows = _STRIP_ROWS * factor
    for top in range(0, height, rows):
        strip = to_rgb(im.crop((0, top, width, min(height, top + rows))), wide=wide)
        reduced.paste(strip.reduce(factor), (0, top // factor))
    if reduced.size == size:
        return reduced
    return reduced.resize(size, Image.Resampling.LANCZOS)


def decode_image(data: bytes, *, max_pixels: int, max_side: int | None = None) -> DecodedImage:
    """Validate and decode one image; raises an ``ImageError`` with a message saying what is wrong.

    ``max_side``: the longer side of the pixels returned (aspect kept; ``source_size`` keeps the upload's size);
    None = full size.
    """
    if not data:
        raise InvalidImage("empty image: no bytes received")
    try:
        im = _open(data)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image has too many pixels (decompression bomb guard); the limit is {max_pixels}") from e
    except UnidentifiedImageError as e:
        raise UnsupportedFormat(f"not a decodable image; accepted formats: {_FORMAT_NAMES}") from e
    except (OSError, SyntaxError, ValueError, TypeError, struct.error) as e:
        raise InvalidImage(f"corrupt image header: {e}") from e
    with im:
        fmt = im.format or "?"
        width, height = im.size
        if width <= 0 or height <= 0:
            raise InvalidImage(f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
        try:
            im.verify()
        except Exception as e:  # Pillow raises many types for broken files (SyntaxError, OSError, struct.error ...)
            raise InvalidImage(f"corrupt {fmt} image: {e}") from e
    try:
        with _open(data) as im:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            target = fit_size(width, height, max_side)
            shrink = target != (width, height)
            if shrink and fmt in ("JPEG", "MPO"):
                im.draft("RGB", target)  # decode at 1/2, 1/4 or 1/8 scale when that is still >= target
            im.load()
            plain = not shrink and _is_plain(im, fmt)
            orientation = _orientation(im)
            picture = _shrunk_rgb(im, target) if shrink else to_rgb(im)
            if orientation != 1:
                picture = picture.transpose(_TRANSPOSE[orientation])
            rgb = np.array(picture, dtype=np.uint8)
            del picture
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image has too many pixels; the limit is {max_pixels}") from e
    except Exception as e:
        raise InvalidImage(f"cannot decode {fmt} image (truncated or corrupt): {e}") from e
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidImage(f"image decoded to an unusable shape {rgb.shape}")
    source = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return DecodedImage(
        rgb=rgb,
        format=fmt,
        n_bytes=len(data),
        original=data if plain else None,
        source_size=source if shrink else None,
    )


def _is_plain(im: Image.Image, fmt: str) -> bool:
    """A file the model's own decoder turns into the same RGB pixels: 8-bit RGB JPEG/PNG, no transparency, not
    rotated by EXIF (TensorFlow's decoders ignore EXIF)."""
    if fmt not in ("JPEG", "PNG") or im.mode != "RGB" or "transparency" in im.info:
        return False
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:
        return False
    return orientation in (None, 1)


def decode_images(
    blobs: Sequence[bytes],
    *,
    max_pixels: int,
    max_total_pixels: int | None = None,
    max_side: int | None = None,
    reserve: Callable[[ImageHeader | None], Any] | None = None,
) -> list[DecodedImage]:
    """Decode several uploads; a failure names the image (``image 2: ...``) when there is more than one.

    ``max_total_pixels`` bounds the pixels of all images together (``ImageTooLarge``). ``max_side`` as for
    ``decode_image``. ``reserve(header)``, when given, is entered as a context manager around each decode (with the
    header of ``inspect_image``, None for an unreadable one): the caller's memory budget.
    """
    if max_total_pixels is not None and len(blobs) > 1:
        declared = sum(_declared_pixels(blob) for blob in blobs)  # headers only: refuse before decoding anything
        if declared > max_total_pixels:
            raise ImageTooLarge(f"the images of this request have more than {max_total_pixels} pixels together")
    decoded: list[DecodedImage] = []
    total = 0
    for i, blob in enumerate(blobs):
        try:
            if reserve is None:
                image = decode_image(blob, max_pixels=max_pixels, max_side=max_side)
            else:
                header = inspect_image(blob, max_side=max_side)
                if header is not None and header.pixels > max_pixels:
                    raise ImageTooLarge(
                        f"image is {header.width}x{header.height} = {header.pixels} pixels; the limit is {max_pixels}"
                    )
                with reserve(header):
                    image = decode_image(blob, max_pixels=max_pixels, max_side=max_side)
        except ImageError as e:
            if len(blobs) > 1:
                raise type(e)(f"image {i + 1}: {e.message}") from e
            raise
        total += image.width * image.height
        if max_total_pixels is not None and total > max_total_pixels:
            raise ImageTooLarge(f"the images of this request have more than {max_total_pixels} pixels together")
        decoded.append(image)
    return decoded


def _declared_pixels(blob: bytes) -> int:
    """Width x height from the header alone (0 when unreadable: decoding reports that image's error later)."""
    try:
        with _open(blob) as im:
            return int(im.width) * int(im.height)
    except Exception:
        return 0


# Quality of the JPEG overlay previews in JSON answers: no visible artefacts on a blended heatmap.
_JPEG_QUALITY = 90


def encode_jpeg(rgb: np.ndarray, *, quality: int = _JPEG_QUALITY) -> bytes:
    """JPEG bytes of a ``uint8`` [H,W,3] array: the JSON answers' overlay preview. About 20 times faster to encode
    than PNG on a small CPU (zlib dominates PNG) and 5-7 times smaller; lossless pictures stay on ``format=png``."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(rgb: np.ndarray, *, compress_level: int = 1) -> bytes:
    """PNG bytes of a ``uint8`` [H,W,3] (or [H,W]) array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


# Images up to this factor over the serving box are sent unshrunk (see serving_png).
_SHRINK_SLACK = 1.25


def serving_png(image: DecodedImage, input_size: tuple[int, int] | None = None, *, factor: float = 2.0) -> bytes:
    """The bytes sent to the model's ``image_bytes`` input: the upload itself when it is a plain RGB JPEG/PNG, else a
    PNG of the normalised pixels; shrunk (aspect kept) when much larger than needed.

    The model resizes with padding to ``input_size`` anyway; an image larger than ``factor`` times that box is first
    shrunk with Pillow's antialiasing filter, which keeps gRPC messages small and the in-graph resize faithful. One
    at most ``_SHRINK_SLACK`` over that box goes as it is: re-encoding it would cost more than the bytes it saves.
    """
    if input_size is not None and all(s and s > 0 for s in input_size):
        box_h, box_w = (int(math.ceil(s * factor)) for s in input_size)
        scale = min(box_h / image.height, box_w / image.width)
        if scale * _SHRINK_SLACK < 1.0:
            new_w = max(1, round(image.width * scale))
            new_h = max(1, round(image.height * scale))
            return encode_png(np.asarray(Image.fromarray(image.rgb).resize((new_w, new_h), Image.Resampling.LANCZOS)))
    if image.original is not None:
        return image.original
    return encode_png(image.rgb)


def pad_box(height: int, width: int, target_height: int, target_width: int) -> PadBox:
    """The content box of ``tf.image.resize_with_pad(image[height, width], target_height, target_width)``."""
    if min(height, width, target_height, target_width) <= 0:
        raise ValueError("sizes must be positive")
    # Same float32 arithmetic as TensorFlow's _resize_image_with_pad_common, so the integers agree.
    f32 = np.float32
    h, w, th, tw = f32(height), f32(width), f32(target_height), f32(target_width)
    ratio = max(f32(w / tw), f32(h / th))
    resized_h = f32(h / ratio)
    resized_w = f32(w / ratio)
    top = max(0, int(np.floor(f32((th - resized_h) / f32(2)))))
    left = max(0, int(np.floor(f32((tw - resized_w) / f32(2)))))
    content_h = min(target_height - top, max(1, int(np.floor(resized_h))))
    content_w = min(target_width - left, max(1, int(np.floor(resized_w))))
    return PadBox(top=top, left=left, height=content_h, width=content_w)


def resize_with_pad(rgb: np.ndarray, target_height: int, target_width: int) -> np.ndarray:
    """``tf.image.resize_with_pad`` in NumPy/Pillow: float32 [H,W,3] pixels 0-255, zero padding."""
    box = pad_box(rgb.shape[0], rgb.shape[1], target_height, target_width)
    resized = Image.fromarray(np.ascontiguousarray(rgb.astype(np.uint8))).resize(
        (box.width, box.height), Image.Resampling.BILINEAR
    )
    out = np.zeros((target_height, target_width, 3), dtype=np.float32)
    out[box.top : box.top + box.height, box.left : box.left + box.width] = np.asarray(resized, dtype=np.float32)
    return out
