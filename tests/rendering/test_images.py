"""Upload decoding and validation (rendering.images) on real photos and hand-made broken files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from rendering.errors import ImageError, ImageTooLarge, InvalidImage, UnsupportedFormat
from rendering.images import decode_image, decode_images, inspect_image, pad_box, resize_with_pad, serving_png
from tests.rendering.conftest import encode, solid

LIMIT = 40_000_000


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_header(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR claims width x height (8-bit RGB) with the given (usually far too short) image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(idat))
        + _png_chunk(b"IEND", b"")
    )


def _error(data: bytes, limit: int = LIMIT) -> ImageError:
    with pytest.raises(ImageError) as info:
        decode_image(data, max_pixels=limit)
    return info.value


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP"])
def test_every_accepted_format_decodes_the_photo(chelsea: np.ndarray, fmt: str) -> None:
    decoded = decode_image(encode(chelsea, fmt), max_pixels=LIMIT)
    assert decoded.rgb.shape == chelsea.shape and decoded.rgb.dtype == np.uint8
    assert decoded.format == fmt
    mean_error = np.abs(decoded.rgb.astype(int) - chelsea.astype(int)).mean()
    if fmt in ("PNG", "BMP"):
        assert mean_error == 0
    else:  # lossy formats, and GIF's 256-colour palette
        assert mean_error < 10


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (20, 10), (255, 0, 0)), Image.new("RGB", (20, 10), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = decode_image(buf.getvalue(), max_pixels=LIMIT)
    assert decoded.rgb.shape == (10, 20, 3)
    assert tuple(decoded.rgb[5, 10]) == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: the stored left side ends on top
    data = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    rgb = decode_image(data, max_pixels=LIMIT).rgb
    assert rgb.shape == (40, 20, 3)
    assert rgb[5, 10, 0] > 200 and rgb[5, 10, 2] < 60  # top: red
    assert rgb[35, 10, 2] > 200 and rgb[35, 10, 0] < 60  # bottom: blue


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    data = encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red in CMYK
    rgb = decode_image(data, max_pixels=LIMIT).rgb
    assert rgb.shape == (16, 16, 3)
    r, g, b = rgb[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    grey16 = np.full((8, 8), 32768, dtype=np.uint16)
    data = encode(Image.fromarray(grey16), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb = decode_image(data, max_pixels=LIMIT).rgb
    assert np.all(np.abs(rgb.astype(int) - 128) <= 1)


def test_grey_image_becomes_three_equal_channels() -> None:
    grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))
    rgb = decode_image(encode(grey, "PNG"), max_pixels=LIMIT).rgb
    assert rgb.shape == (4, 16, 3)
    assert np.array_equal(rgb[..., 0], grey) and np.array_equal(rgb[..., 1], grey) and np.array_equal(rgb[..., 2], grey)


def test_alpha_is_composited_on_white(tux_photo: bytes) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[:2] = (0, 0, 0, 0)  # fully transparent -> white
    rgba[2:] = (255, 0, 0, 128)  # half red on white -> (255, 127, 127)
    rgb = decode_image(encode(rgba, "PNG"), max_pixels=LIMIT).rgb
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert rgb[3, 3, 0] == 255 and abs(int(rgb[3, 3, 1]) - 127) <= 1
    # A real cut-out photo: its transparent corner turns white.
    photo = Image.open(io.BytesIO(tux_photo))
    assert photo.mode in ("RGBA", "LA", "P")
    rgb = decode_image(tux_photo, max_pixels=LIMIT).rgb
    corner_alpha = np.asarray(photo.convert("RGBA"))[0, 0, 3]
    if corner_alpha == 0:
        assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert rgb.shape[:2] == (photo.height, photo.width)


def test_palette_transparency_is_composited() -> None:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 255, 0] + [0, 0, 0] * 255)
    im.info["transparency"] = 0
    buf = io.BytesIO()
    im.save(buf, format="GIF", transparency=0)
    rgb = decode_image(buf.getvalue(), max_pixels=LIMIT).rgb
    assert tuple(rgb[1, 1]) == (255, 255, 255)


def test_empty_and_garbage_bytes_are_invalid() -> None:
    assert isinstance(_error(b""), InvalidImage)
    err = _error(b"this is not an image at all")
    assert isinstance(err, UnsupportedFormat) and "JPEG, PNG, GIF, BMP, WebP" in err.message


def test_other_formats_are_refused(chelsea: np.ndarray) -> None:
    err = _error(encode(chelsea, "TIFF"))
    assert isinstance(err, UnsupportedFormat) and "accepted formats" in err.message


def test_zero_sized_image_is_invalid() -> None:
    for w, h in ((0, 0), (0, 10), (10, 0)):
        err = _error(png_with_header(w, h))
        assert isinstance(err, InvalidImage), (w, h, err)


def test_pixel_limit_is_too_large_before_decoding() -> None:
    err = _error(png_with_header(8000, 6000))  # 48 MP, over the 40 MP limit; the data is never read
    assert isinstance(err, ImageTooLarge) and "8000x6000" in err.message
    assert isinstance(_error(solid((1, 2, 3), (300, 200)), limit=300 * 200 - 1), ImageTooLarge)
    assert decode_image(solid((1, 2, 3), (300, 200)), max_pixels=300 * 200).width == 300


def test_decompression_bomb_header_is_too_large() -> None:
    err = _error(png_with_header(60000, 60000), limit=10**10)  # 3.6 GP: Pillow's own bomb guard fires first
    assert isinstance(err, ImageTooLarge)


def test_truncated_files_are_invalid(chelsea_jpeg: bytes, chelsea_png: bytes) -> None:
    for data in (chelsea_jpeg[: len(chelsea_jpeg) // 2], chelsea_png[: len(chelsea_png) // 2]):
        err = _error(data)
        assert isinstance(err, InvalidImage), err


def test_header_with_missing_data_is_invalid() -> None:
    assert isinstance(_error(png_with_header(64, 64, idat=b"\x00" * 10)), InvalidImage)


def test_decode_images_names_the_bad_one(chelsea_png: bytes) -> None:
    with pytest.raises(ImageError) as info:
        decode_images([chelsea_png, b"nope"], max_pixels=LIMIT)
    assert isinstance(info.value, InvalidImage) and info.value.message.startswith("image 2:")
    assert len(decode_images([chelsea_png, chelsea_png], max_pixels=LIMIT)) == 2


def test_serving_png_shrinks_only_large_images(chelsea: np.ndarray, chelsea_png: bytes) -> None:
    decoded = decode_image(chelsea_png, max_pixels=LIMIT)  # 451 x 300
    small = Image.open(io.BytesIO(serving_png(decoded, (32, 32), factor=2.0)))
    assert max(small.size) <= 64 and abs(small.width / small.height - 451 / 300) < 0.05
    same = Image.open(io.BytesIO(serving_png(decoded, (300, 300), factor=2.0)))
    assert same.size == (451, 300)
    assert np.array_equal(np.asarray(same), chelsea)
    # 451 is just over 2 x 224 = 448: within the slack, the upload goes unchanged (no resize, no re-encode) ...
    assert serving_png(decoded, (224, 224), factor=2.0) is chelsea_png
    # ... while 1.25 x over the box or more is shrunk to the box.
    shrunk = Image.open(io.BytesIO(serving_png(decoded, (170, 170), factor=2.0)))
    assert shrunk.width == 340 and abs(shrunk.height - 340 * 300 / 451) <= 1


def test_pad_box_matches_resize_with_pad_geometry() -> None:
    # Landscape 100x200 into 64x64: scale 64/200 -> 32x64, centred vertically.
    assert pad_box(100, 200, 64, 64) == pad_box(height=100, width=200, target_height=64, target_width=64)
    box = pad_box(100, 200, 64, 64)
    assert (box.top, box.left, box.height, box.width) == (16, 0, 32, 64)
    # Portrait 300x100: width 64/3 = 21.33 -> 21, left = floor((64 - 21.33) / 2) = 21.
    box = pad_box(300, 100, 64, 64)
    assert (box.top, box.left, box.height, box.width) == (0, 21, 64, 21)
    # Same aspect: no padding at all.
    box = pad_box(50, 50, 224, 224)
    assert (box.top, box.left, box.height, box.width) == (0, 0, 224, 224)
    with pytest.raises(ValueError):
        pad_box(0, 10, 64, 64)


def test_resize_with_pad_pads_with_zeros() -> None:
    rgb = np.full((100, 200, 3), 200, dtype=np.uint8)
    out = resize_with_pad(rgb, 64, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    assert np.all(out[:16] == 0) and np.all(out[48:] == 0)
    assert np.allclose(out[16:48], 200)


def test_total_pixels_of_a_request_are_bounded() -> None:
    blobs = [solid((1, 2, 3), (100, 100))] * 3
    assert len(decode_images(blobs, max_pixels=LIMIT, max_total_pixels=30_000)) == 3
    with pytest.raises(ImageError) as info:
        decode_images(blobs, max_pixels=LIMIT, max_total_pixels=29_999)
    assert isinstance(info.value, ImageTooLarge) and "29999 pixels together" in info.value.message


def test_the_configured_limit_decides_below_pillows_bomb_error() -> None:
    # 100 MP: above Pillow's warning threshold (89 MP), below its error (179 MP). The data is too short, so an
    # accepted header still ends in a 400 for the truncated data, never in a warning turned error.
    header = png_with_header(10_000, 10_000)
    assert isinstance(_error(header, limit=99_999_999), ImageTooLarge)
    assert isinstance(_error(header, limit=100_000_000), InvalidImage)


def test_total_pixels_are_checked_from_headers_first() -> None:
    # Two 30 MP headers with no data: refused as too large together, before any decoding is tried.
    blobs = [png_with_header(6000, 5000), png_with_header(6000, 5000)]
    with pytest.raises(ImageError) as info:
        decode_images(blobs, max_pixels=LIMIT, max_total_pixels=50_000_000)
    assert isinstance(info.value, ImageTooLarge)


def test_plain_uploads_are_sent_as_they_are(chelsea: np.ndarray, chelsea_jpeg: bytes, chelsea_png: bytes) -> None:
    for data in (chelsea_jpeg, chelsea_png):
        decoded = decode_image(data, max_pixels=LIMIT)
        assert serving_png(decoded, (300, 300)) is data  # small enough: no shrinking, no re-encoding
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = encode(chelsea, "JPEG", exif=exif.tobytes())
    others = [rotated, encode(chelsea, "BMP"), encode(chelsea, "WEBP"), encode(chelsea[..., 0], "PNG"),
              encode(np.dstack([chelsea, np.full(chelsea.shape[:2], 255, np.uint8)]), "PNG")]  # fmt: skip
    for data in others:
        decoded = decode_image(data, max_pixels=LIMIT)
        sent = serving_png(decoded, (300, 300))
        assert sent != data and sent.startswith(b"\x89PNG")
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(sent))), decoded.rgb)


# ------------------------------------------------------------------------------------- decoding to what is needed


def _one_bit(size: tuple[int, int]) -> bytes:
    image = Image.new("1", size, 0)
    image.paste(1, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    return encode(image)


def test_inspect_image_says_what_decoding_costs() -> None:
    header = inspect_image(_one_bit((3000, 2000)), max_side=300)
    assert header is not None and (header.width, header.height, header.mode) == (3000, 2000, "1")
    assert header.decode_bytes == 3000 * 2000 * 1 + 300 * 200 * 12  # one byte per pixel, plus the shrunk copy
    rgba = inspect_image(encode(Image.new("RGBA", (500, 400))))
    assert rgba is not None and rgba.decode_bytes == 500 * 400 * 4 + 500 * 400 * 12
    photo = inspect_image(encode(Image.new("RGB", (4000, 3000), (9, 9, 9)), "JPEG"), max_side=500)
    assert photo is not None and photo.decode_bytes == 500 * 375 * 4 + 500 * 375 * 12  # JPEG drafted at 1/8
    assert inspect_image(b"not an image") is None


def test_max_side_keeps_the_aspect_and_the_picture() -> None:
    decoded = decode_image(_one_bit((3000, 2000)), max_pixels=10**8, max_side=300)
    assert decoded.rgb.shape == (200, 300, 3) and (decoded.source_width, decoded.source_height) == (3000, 2000)
    assert decoded.original is None  # shrunk pixels are what the model gets, never the full-size upload
    assert decoded.rgb[100, 150].tolist() == [255, 255, 255] and decoded.rgb[10, 10].tolist() == [0, 0, 0]
    small = decode_image(solid((10, 20, 30), (60, 40)), max_pixels=10**8, max_side=300)
    assert small.rgb.shape == (40, 60, 3) and small.source_size is None and small.original is not None


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "LA", "CMYK"])
def test_shrinking_converts_every_mode_like_full_size(mode: str) -> None:
    base = Image.new("RGB", (640, 480), (200, 40, 40))
    base.paste((20, 40, 200), (320, 0, 640, 480))
    image = base.convert("L").convert(mode) if mode in ("I;16", "LA") else base.convert(mode)
    data = encode(image, "JPEG" if mode == "CMYK" else "PNG")
    full = decode_image(data, max_pixels=10**8)
    shrunk = decode_image(data, max_pixels=10**8, max_side=160)
    assert shrunk.rgb.shape == (120, 160, 3)
    expected = np.asarray(Image.fromarray(full.rgb).resize((160, 120), Image.Resampling.BOX), dtype=np.int16)
    assert np.abs(shrunk.rgb[:, 20:60].astype(np.int16) - expected[:, 20:60]).max() <= 6
    assert np.abs(shrunk.rgb[:, 100:140].astype(np.int16) - expected[:, 100:140]).max() <= 6


def test_exif_rotation_is_applied_to_the_shrunk_pixels() -> None:
    image = Image.new("RGB", (800, 400), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 400, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    decoded = decode_image(buffer.getvalue(), max_pixels=10**8, max_side=200)
    assert decoded.rgb.shape == (200, 100, 3) and (decoded.source_width, decoded.source_height) == (400, 800)
    assert decoded.rgb[20, 50, 2] > 200 and decoded.rgb[180, 50, 0] > 200  # blue on top after the rotation


def test_decode_images_enters_the_reservation_around_each_decode() -> None:
    seen = []

    class _Reserve:
        def __init__(self, header) -> None:
            self.header = header

        def __enter__(self) -> None:
            seen.append(("enter", self.header.width))

        def __exit__(self, *exc: object) -> None:
            seen.append(("exit", self.header.width))

    blobs = [solid((1, 2, 3), (30, 20)), solid((1, 2, 3), (50, 20))]
    decode_images(blobs, max_pixels=10**6, reserve=_Reserve)
    assert seen == [("enter", 30), ("exit", 30), ("enter", 50), ("exit", 50)]
    with pytest.raises(ImageTooLarge, match="image 2: image is 50x20"):
        decode_images(blobs, max_pixels=999, reserve=_Reserve)
