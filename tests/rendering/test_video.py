"""Video in and out (rendering.video): headers, limits and frames of MP4 and GIF clips written by imageio, the MP4
and GIF writers read back with imageio, captions, and the errors of files that are not videos."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from rendering.errors import EncoderError, InvalidVideo, RenderingError, VideoError, VideoTooLarge
from rendering.video import (
    OUTPUT_FORMATS,
    VideoLimits,
    caption_frame,
    open_video,
    open_writer,
    output_format,
    read_frames,
)

FRAMES, FPS, HEIGHT, WIDTH = 6, 10, 48, 64


def _frames(n: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A bright square moving left to right over a colour gradient: every frame different, easy to compress."""
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 // max(width - 1, 1), ys * 255 // max(height - 1, 1), np.full_like(xs, 90)], axis=-1)
    out = np.repeat(base[np.newaxis].astype(np.uint8), n, axis=0)
    for i in range(n):
        left = i * (width - 12) // max(n - 1, 1)
        out[i, height // 3 : height // 3 + 12, left : left + 12] = 250
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    frames = _frames()
    mp4, gif = folder / "move.mp4", folder / "move.gif"
    iio.imwrite(mp4, frames, plugin="FFMPEG", fps=FPS, codec="libx264", macro_block_size=1)
    iio.imwrite(gif, frames, plugin="pillow", duration=[50, 100, 150, 100, 100, 200], loop=0)
    return {"mp4": mp4, "gif": gif}


def test_mp4_header_and_frames(clips: dict[str, Path]) -> None:
    meta, frames = read_frames(clips["mp4"])
    assert (meta.codec, meta.width, meta.height, meta.fps) == ("h264", WIDTH, HEIGHT, FPS)
    assert meta.duration_s == pytest.approx(FRAMES / FPS, abs=0.05) and meta.frames_hint == FRAMES
    decoded = np.stack(list(frames))
    assert decoded.shape == (FRAMES, HEIGHT, WIDTH, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(np.int16) - _frames()).mean() < 8  # H.264 is lossy, but this is the same picture


def test_gif_header_frames_and_durations(clips: dict[str, Path]) -> None:
    meta, frames = open_video(clips["gif"])
    items = list(frames)
    assert (meta.codec, meta.width, meta.height, meta.frames_hint) == ("gif", WIDTH, HEIGHT, FRAMES)
    assert meta.duration_s == pytest.approx(0.7)
    assert [f.duration_ms for f in items] == [50, 100, 150, 100, 100, 200]
    assert all(f.rgb.shape == (HEIGHT, WIDTH, 3) for f in items)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (VideoLimits(max_frames=5), "limit is 5"),
        (VideoLimits(max_seconds=0.5), "limit is 0.5 s"),
        (VideoLimits(max_frame_pixels=WIDTH * HEIGHT - 1), f"limit is {WIDTH * HEIGHT - 1}"),
        (VideoLimits(max_bytes=100), "limit is 100"),
    ],
)
def test_limits_are_checked_from_the_header(clips: dict[str, Path], limits: VideoLimits, message: str) -> None:
    for path in clips.values():
        with pytest.raises(VideoTooLarge, match=message):
            open_video(path, limits)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is not a video", "not a decodable video"),
        (b"", "empty video"),
        (b"\x89PNG\r\n\x1a\n" + bytes(32), "still PNG image"),
        (b"\xff\xd8\xff" + bytes(32), "still JPEG image"),
        (b"GIF89a" + bytes(40), "GIF"),
    ],
)
def test_files_that_are_not_videos_are_invalid(tmp_path: Path, data: bytes, message: str) -> None:
    source = tmp_path / "input"
    source.write_bytes(data)
    with pytest.raises(InvalidVideo, match=message) as err:
        meta, frames = open_video(source)
        list(frames)
    assert isinstance(err.value, VideoError) and isinstance(err.value, RenderingError)


def test_output_format_by_extension(tmp_path: Path) -> None:
    assert [output_format(tmp_path / f"x.{ext}") for ext in ("mp4", "GIF")] == ["mp4", "gif"]
    with pytest.raises(InvalidVideo, match=r"\.mp4 or \.gif"):
        output_format(tmp_path / "x.avi")
    assert set(OUTPUT_FORMATS) == {"mp4", "gif"}


def test_mp4_writer_pads_odd_sizes_and_keeps_the_rate(tmp_path: Path) -> None:
    frames = _frames(4, 31, 45)
    writer = open_writer(tmp_path / "odd.mp4", "mp4", 8.0)
    for frame in frames:
        writer.write(frame, 125.0)
    writer.close()
    meta, decoded = read_frames(tmp_path / "odd.mp4")
    assert (meta.width, meta.height, meta.fps, writer.fps) == (46, 32, 8, 8)
    assert np.stack(list(decoded)).shape == (4, 32, 46, 3)


def test_gif_writer_keeps_the_clip_length_in_centiseconds(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "eight.gif", "gif", 8.0)
    for frame in _frames(8):
        writer.write(frame, 125.0)
    writer.close()
    _, frames = open_video(tmp_path / "eight.gif")
    durations = [f.duration_ms for f in frames]
    assert sum(durations) == 1000 and set(durations) == {120, 130} and writer.fps == 8


def test_mp4_writer_refuses_a_frame_of_another_size(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "x.mp4", "mp4", 10.0)
    writer.write(_frames(1)[0], 100.0)
    with pytest.raises(InvalidVideo, match="frame size changed"):
        writer.write(_frames(1, 20, 20)[0], 100.0)
    writer.abort()
    with pytest.raises(InvalidVideo, match="unknown output format"):
        open_writer(tmp_path / "x.avi", "avi", 10.0)
    assert issubclass(EncoderError, VideoError) and issubclass(EncoderError, RuntimeError)


def test_caption_writes_on_a_band_at_the_top_only() -> None:
    frame = np.full((120, 200, 3), 200, dtype=np.uint8)
    captioned = caption_frame(frame, "vehicle 0.97")
    changed_rows = np.nonzero(np.any(captioned != frame, axis=(1, 2)))[0]
    assert changed_rows.min() == 0 and changed_rows.max() < 40
    band = captioned[: changed_rows.max() + 1]
    assert (band > 200).all(axis=-1).sum() > 20, "no light text on the band"
    assert band.mean() < frame.mean()
    assert caption_frame(frame, "a").shape == frame.shape
