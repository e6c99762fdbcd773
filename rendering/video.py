"""Video in and out, frame by frame: read a clip's metadata and RGB frames, write MP4 or GIF, caption a frame.

Frames are streamed: ffmpeg (the binary bundled with ``imageio-ffmpeg``) decodes MP4/WebM/MOV/AVI/MKV into raw RGB
frames on a pipe, Pillow decodes GIFs (alpha and palettes as still uploads, ``images.to_rgb``). ``open_video`` reads
the container's header first and checks it against ``VideoLimits`` before any frame is decoded; the frame generator
it returns holds one frame at a time. Writers take frames one at a time: MP4 (H.264, yuv420p) through an ffmpeg
subprocess at the source frame rate, GIF through Pillow with the source frame durations (its palette frames are kept
until ``close``).

Nothing here knows what the frames are for (the explain API's ``explain_api.video`` explains them through the
model server); failures are ``rendering.errors.VideoError``s: ``InvalidVideo``, ``VideoTooLarge`` and
``EncoderError``.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from rendering.errors import EncoderError, InvalidVideo, VideoTooLarge
from rendering.images import to_rgb

__all__ = [
    "OUTPUT_FORMATS",
    "Frame",
    "FrameWriter",
    "GifWriter",
    "Mp4Writer",
    "VideoLimits",
    "VideoMeta",
    "caption_frame",
    "open_video",
    "open_writer",
    "output_format",
    "read_frames",
]

# Output container -> content type.
OUTPUT_FORMATS: dict[str, str] = {"mp4": "video/mp4", "gif": "image/gif"}
_DEFAULT_FPS = 25.0  # ffmpeg's own assumption when a stream does not say
_GIF_DEFAULT_MS = 100  # browsers show GIF frames with a 0 delay for about 100 ms
_STILL_MAGIC = ((b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"))
_FFMPEG_TIMEOUT_S = 120.0
_PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class VideoLimits:
    """What one video may be; ``None`` = no limit. Breaking one is ``VideoTooLarge``."""

    max_frames: int | None = 300
    max_seconds: float | None = 30.0
    max_frame_pixels: int | None = 1920 * 1088
    max_bytes: int | None = 20 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_seconds", "max_frame_pixels", "max_bytes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")

    @classmethod
    def none(cls) -> VideoLimits:
        """No limit at all."""
        return cls(None, None, None, None)


@dataclass(frozen=True)
class VideoMeta:
    """What the container says before any frame is decoded."""

    codec: str  # "gif" or ffmpeg's codec name, e.g. "h264"
    width: int
    height: int
    fps: float
    duration_s: float | None
    frames_hint: int | None  # exact for GIF, duration x fps for the rest (may be off by a frame or two)


def output_format(path: str | Path) -> str:
    """The output container named by a file name's extension (``mp4`` or ``gif``); ``InvalidVideo`` otherwise."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in OUTPUT_FORMATS:
        raise InvalidVideo(f"output must end in {' or '.join('.' + f for f in OUTPUT_FORMATS)}, got {str(path)!r}")
    return suffix


# ------------------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Frame:
    """One decoded frame and how long it is shown."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    duration_ms: float


def _sniff(path: Path) -> str:
    """Which decoder, ``gif`` or ``ffmpeg``; ``InvalidVideo`` for still images and empty files."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise InvalidVideo(f"cannot read {path}: {e.strerror or e}") from e
    if not head:
        raise InvalidVideo("empty video: no bytes")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    for magic, name in _STILL_MAGIC:
        if head.startswith(magic):
            raise InvalidVideo(f"this is a still {name} image, not a video; explain it with :explain")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise InvalidVideo("this is a still WebP image, not a video; explain it with :explain")
    return "ffmpeg"


def _check_limits(meta: VideoMeta, limits: VideoLimits) -> None:
    pixels = meta.width * meta.height
    if limits.max_frame_pixels is not None and pixels > limits.max_frame_pixels:
        raise VideoTooLarge(
            f"frames are {meta.width}x{meta.height} = {pixels} pixels; the limit is {limits.max_frame_pixels}"
        )
    if limits.max_seconds is not None and meta.duration_s is not None and meta.duration_s > limits.max_seconds:
        raise VideoTooLarge(f"the video lasts {meta.duration_s:.2f} s; the limit is {limits.max_seconds:g} s")
    if limits.max_frames is not None and meta.frames_hint is not None and meta.frames_hint > limits.max_frames:
        raise VideoTooLarge(f"the video has about {meta.frames_hint} frames; the limit is {limits.max_frames}")


def _gif_durations(im: Any) -> list[float]:
    durations = []
    for i in range(getattr(im, "n_frames", 1)):
        im.seek(i)
        durations.append(float(im.info.get("duration") or _GIF_DEFAULT_MS))
    im.seek(0)
    return durations


def _gif_meta(path: Path) -> tuple[VideoMeta, list[float]]:
    try:
        with Image.open(path, formats=["GIF"]) as im:
            width, height = im.size
            durations = _gif_durations(im)
    except UnidentifiedImageError as e:
        raise InvalidVideo("not a decodable GIF") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InvalidVideo(f"corrupt GIF: {e}") from e
    total_s = sum(durations) / 1000.0
    fps = len(durations) / total_s if total_s > 0 else 1000.0 / _GIF_DEFAULT_MS
    return VideoMeta("gif", width, height, fps, total_s, len(durations)), durations


def _gif_frames(path: Path, durations: Sequence[float]) -> Iterator[Frame]:
    with Image.open(path, formats=["GIF"]) as im:
        for i, duration in enumerate(durations):
            try:
                im.seek(i)
                rgb = np.array(to_rgb(im.convert("RGBA")), dtype=np.uint8)
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise InvalidVideo(f"corrupt GIF frame {i + 1}: {e}") from e
            yield Frame(rgb, duration)


_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO_STREAM_RE = re.compile(r"Stream #\d+:\d+.*?: Video: ([^\s,]+)(.*)$", re.MULTILINE)
_SIZE_RE = re.compile(r", (\d+)x(\d+)(?=[\s,]|$)")
_RATE_RE = re.compile(r"([\d.]+)(k?) (fps|tbr)")
_ROTATION_RE = re.compile(r"rotation of (-?[\d.]+) degrees", re.IGNORECASE)


def _ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "invalid" in line.lower()]
    line = (errors or lines or ["no details"])[-1]
    return re.sub(r"^\[[^\]]*\] ", "", line)[:300]


def _parse_header(text: str) -> VideoMeta | None:
    """Size, rate, duration and codec of the first video stream in ``ffmpeg -i``'s report (None: no video)."""
    stream = _VIDEO_STREAM_RE.search(text)
    size = _SIZE_RE.search(stream.group(2)) if stream else None
    if stream is None or size is None:
        return None
    width, height = int(size.group(1)), int(size.group(2))
    rotation = _ROTATION_RE.search(text[stream.end() :])
    if rotation is not None and round(abs(float(rotation.group(1)))) % 180 == 90:
        width, height = height, width  # ffmpeg turns the frames upright when it decodes them
    rates = {kind: float(value) * (1000 if k else 1) for value, k, kind in _RATE_RE.findall(stream.group(2))}
    fps = rates.get("fps") or rates.get("tbr") or _DEFAULT_FPS
    duration = _DURATION_RE.search(text)
    seconds = None
    if duration is not None:
        h, m, sec = duration.groups()
        seconds = int(h) * 3600 + int(m) * 60 + float(sec) or None
    hint = round(seconds * fps) if seconds else None
    return VideoMeta(stream.group(1), width, height, fps, seconds, hint)


def _ffmpeg_probe(path: Path) -> VideoMeta:
    """Read the container's header with ``ffmpeg -i`` (no decoding)."""
    try:
        run = subprocess.run(
            [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise InvalidVideo(f"ffmpeg could not read the video header in {_PROBE_TIMEOUT_S:g} s") from e
    text = run.stderr.decode("utf-8", "replace")
    meta = _parse_header(text)
    if meta is None:
        if "Stream #" in text:
            raise InvalidVideo("not a decodable video: it has no video stream")
        raise InvalidVideo(f"not a decodable video (ffmpeg: {_ffmpeg_error(text)})")
    if meta.width <= 0 or meta.height <= 0:
        raise InvalidVideo(f"not a decodable video: frames of {meta.width}x{meta.height}")
    return meta


def _ffmpeg_frames(path: Path, meta: VideoMeta) -> Iterator[Frame]:
    """Raw RGB frames from an ffmpeg subprocess, one at a time; ffmpeg is ended when the generator is."""
    cmd = [_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]  # fmt: skip
    n_bytes = meta.width * meta.height * 3
    duration = 1000.0 / meta.fps
    with tempfile.TemporaryFile() as log, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log) as proc:
        assert proc.stdout is not None
        count = 0
        try:
            while True:
                raw = proc.stdout.read(n_bytes)
                if not raw:
                    break
                if len(raw) != n_bytes:
                    raise InvalidVideo(f"corrupt video: frame {count + 1} is incomplete")
                count += 1
                yield Frame(np.frombuffer(raw, dtype=np.uint8).reshape(meta.height, meta.width, 3), duration)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=_PROBE_TIMEOUT_S)
        if count == 0:
            log.seek(0)
            details = _ffmpeg_error(log.read().decode("utf-8", "replace"))
            raise InvalidVideo(f"no frame could be decoded (ffmpeg: {details})")


def open_video(path: str | Path, limits: VideoLimits | None = None) -> tuple[VideoMeta, Iterator[Frame]]:
    """The container's metadata, checked against ``limits`` (default: none), and a generator of its frames.

    Bad files fail here, before a frame is decoded; the generator may still raise ``InvalidVideo`` for a frame that
    turns out corrupt. Close the generator to stop ffmpeg early.
    """
    path = Path(path)
    limits = limits or VideoLimits.none()
    if limits.max_bytes is not None:
        try:
            size = path.stat().st_size
        except OSError as e:
            raise InvalidVideo(f"cannot read {path}: {e.strerror or e}") from e
        if size > limits.max_bytes:
            raise VideoTooLarge(f"the video has {size} bytes; the limit is {limits.max_bytes}")
    if _sniff(path) == "gif":
        meta, durations = _gif_meta(path)
        _check_limits(meta, limits)
        return meta, _gif_frames(path, durations)
    meta = _ffmpeg_probe(path)
    _check_limits(meta, limits)
    return meta, _ffmpeg_frames(path, meta)


def read_frames(path: str | Path, limits: VideoLimits | None = None) -> tuple[VideoMeta, Iterator[np.ndarray]]:
    """The metadata and a generator of RGB ``uint8`` frames (streamed, one at a time) of a video or GIF."""
    meta, frames = open_video(path, limits)
    return meta, (f.rgb for f in frames)


# ------------------------------------------------------------------------------------------------------ writing


class Mp4Writer:
    """H.264 (yuv420p, constant rate) in MP4, from an ffmpeg subprocess fed raw RGB frames; odd sides are padded to
    even (yuv420p needs it). ffmpeg is spawned without a pre-exec hook, so an open gRPC channel does not mind."""

    def __init__(self, path: Path, fps: float, crf: int) -> None:
        self._path, self._crf = path, crf
        self._rate = Fraction(fps).limit_denominator(1001)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._size: tuple[int, int] | None = None

    def _start(self, width: int, height: int) -> None:
        self._size = (width, height)
        self._log = tempfile.TemporaryFile()
        cmd = [_ffmpeg_exe(), "-nostdin", "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", str(self._rate), "-i", "-", "-an", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", "-crf", str(self._crf), "-movflags", "+faststart", "-f", "mp4",
               str(self._path)]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

    def _ffmpeg_said(self) -> str:
        if self._log is None:
            return "no details"
        self._log.seek(0)
        return _ffmpeg_error(self._log.read().decode("utf-8", "replace"))

    def write(self, rgb: np.ndarray, duration_ms: float) -> None:
        h, w = rgb.shape[:2]
        if self._proc is None:
            self._start(w + w % 2, h + h % 2)
        if (w + w % 2, h + h % 2) != self._size:
            raise InvalidVideo(f"frame size changed mid-stream to {w}x{h}")
        if w % 2 or h % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
        except BrokenPipeError as e:
            self._proc.wait(timeout=_FFMPEG_TIMEOUT_S)
            raise EncoderError(f"the H.264 encoder stopped: {self._ffmpeg_said()}") from e

    def close(self) -> None:
        """Finish the file; raises when ffmpeg fails."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.close()
            code = proc.wait(timeout=_FFMPEG_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise EncoderError(f"the H.264 encoder did not finish in {_FFMPEG_TIMEOUT_S:g} s") from None
        if code != 0:
            raise EncoderError(f"the H.264 encoder failed ({code}): {self._ffmpeg_said()}")
        self._log.close()

    def abort(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
        if self._log is not None:
            self._log.close()

    @property
    def fps(self) -> float:
        return float(self._rate)


class GifWriter:
    """Palette frames with their own durations, looped; written by Pillow on ``close``.

    GIF stores delays in 1/100 s: each frame ends at its source end time rounded to 10 ms, so the rounding never
    adds up (8 fps = 120, 130, 120, 130 ... ms) and the clip keeps its length.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._frames: list[Any] = []
        self._durations: list[int] = []
        self._source_ms = 0.0  # end time of the last frame in the source
        self._written_ms = 0  # end time of the last frame in the GIF

    def write(self, rgb: np.ndarray, duration_ms: float) -> None:
        image = Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        self._frames.append(image)
        self._source_ms += duration_ms
        # At least 20 ms: browsers show shorter GIF delays as 100 ms.
        duration = max(20, int(round(self._source_ms / 10.0)) * 10 - self._written_ms)
        self._durations.append(duration)
        self._written_ms += duration

    def close(self) -> None:
        if not self._frames:
            return
        first, *rest = self._frames
        first.save(
            self._path, format="GIF", save_all=True, append_images=rest, duration=self._durations, loop=0,
            optimize=False, disposal=1,
        )  # fmt: skip
        self._frames.clear()

    def abort(self) -> None:
        self._frames.clear()

    @property
    def fps(self) -> float:
        total = sum(self._durations)
        return 1000.0 * len(self._durations) / total if total else 0.0


# ------------------------------------------------------------------------------------------------------ caption


@functools.lru_cache(maxsize=16)
def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def caption_frame(rgb: np.ndarray, text: str) -> np.ndarray:
    """``rgb`` with ``text`` in white on a dark band across its top (the band is blended, the picture stays)."""
    h, w = rgb.shape[:2]
    size = int(min(48, max(10, round(min(h, w) / 12))))
    font = _font(size)
    pad = max(2, size // 4)
    band = min(h, size + 2 * pad)
    out = np.array(rgb, dtype=np.uint8, copy=True)
    out[:band] = (out[:band].astype(np.uint16) * 90 // 256).astype(np.uint8)  # darken to ~35 %
    image = Image.fromarray(out)
    ImageDraw.Draw(image).text((pad, pad), text, fill=(255, 255, 255), font=font)
    return np.asarray(image, dtype=np.uint8)


class FrameWriter(Protocol):
    """What ``open_writer`` returns: frames in, one file out (``close`` finishes it, ``abort`` drops it)."""

    def write(self, rgb: np.ndarray, duration_ms: float) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...

    @property
    def fps(self) -> float: ...


def open_writer(path: str | Path, fmt: str, fps: float, *, crf: int = 18) -> FrameWriter:
    """A writer of ``fmt`` (``mp4`` at ``fps`` with H.264 quality ``crf``, or ``gif`` with each frame's duration)."""
    if fmt == "mp4":
        return Mp4Writer(Path(path), fps, crf)
    if fmt == "gif":
        return GifWriter(Path(path))
    raise InvalidVideo(f"unknown output format {fmt!r}; allowed: {', '.join(OUTPUT_FORMATS)}")
