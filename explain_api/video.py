"""Explain a short video frame by frame: decode, explain in batches through the served model, write the overlays.

Frames are streamed: ffmpeg (the binary bundled with ``imageio-ffmpeg``) decodes MP4/WebM/MOV/AVI/MKV into raw RGB
frames on a pipe, Pillow decodes GIFs. Every ``batch_size`` frames become one batched call of the model's
``explain_<method>`` signature (``service.explain_images``, the same domain function as ``:explain``; a chunk is only
split when its PNGs exceed the gRPC message budget). Each explained frame is blended with its heatmap
(``render.overlay``), captioned with the predicted label and score, and written at once: MP4 (H.264, yuv420p) through
ffmpeg at the source frame rate, or GIF through Pillow with the source frame durations. Only one chunk of frames is
held in memory, except for GIF output, whose palette frames Pillow keeps until the file is written.

``explain_video`` is shared by ``glimpse explain-video`` (``configure_explain_video`` / ``run_explain_video``, with a
progress bar) and the API route of ``video_routes``. Neither imports TensorFlow.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from explain_api.errors import ApiError
from glimpse_wire import contract as c

if TYPE_CHECKING:
    from explain_api.service import ExplainSpec, ModelCatalog, ModelRef, ServingClientLike

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "OUTPUT_FORMATS",
    "FrameLabel",
    "VideoLimits",
    "VideoMeta",
    "VideoOptions",
    "VideoReport",
    "caption_frame",
    "configure_explain_video",
    "explain_video",
    "output_format",
    "read_frames",
    "run_explain_video",
]

DEFAULT_BATCH_SIZE = 8
# Output container -> content type.
OUTPUT_FORMATS: dict[str, str] = {"mp4": "video/mp4", "gif": "image/gif"}
_DEFAULT_FPS = 25.0  # ffmpeg's own assumption when a stream does not say
_GIF_DEFAULT_MS = 100  # browsers show GIF frames with a 0 delay for about 100 ms
_STILL_MAGIC = ((b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"))
_FFMPEG_TIMEOUT_S = 120.0
_PROBE_TIMEOUT_S = 30.0


# ----------------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class VideoLimits:
    """What one video may be; ``None`` = no limit. Breaking one is a 413 (400 for ``max_frame_pixels``)."""

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
    def from_env(cls, env: Mapping[str, str] | None = None) -> VideoLimits:
        """GLIMPSE_VIDEO_MAX_FRAMES, GLIMPSE_VIDEO_MAX_SECONDS, GLIMPSE_VIDEO_MAX_FRAME_PIXELS, GLIMPSE_VIDEO_MAX_BYTES
        (``0`` = no limit); unset ones keep the defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, kind in (("max_frames", int), ("max_seconds", float), ("max_frame_pixels", int), ("max_bytes", int)):
            raw = env.get(f"GLIMPSE_VIDEO_{name.upper()}")
            if raw:
                try:
                    number = kind(raw)
                except ValueError:
                    raise ValueError(f"GLIMPSE_VIDEO_{name.upper()} must be a number, got {raw!r}") from None
                values[name] = number if number > 0 else None
        return cls(**values)


@dataclass(frozen=True)
class VideoOptions:
    """How to explain and draw: frames per model call, overlay look, caption, gRPC budget and deadline."""

    batch_size: int = DEFAULT_BATCH_SIZE
    colormap: str = "viridis"
    image_weight: float = 0.7
    caption: bool = True
    budget: int = int(3.5 * 1024 * 1024)  # bytes of one gRPC request (see ApiConfig.max_message_bytes)
    timeout_s: float | None = 60.0
    size_factor: float = 2.0  # frames larger than this times the model input are shrunk before they are sent
    crf: int = 18  # H.264 constant rate factor: 0 lossless ... 51 worst; 18 looks like the source

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not 0.0 <= float(self.image_weight) <= 1.0:
            raise ValueError(f"image_weight must be in [0, 1], got {self.image_weight!r}")
        if isinstance(self.crf, bool) or not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be an integer in [0, 51], got {self.crf!r}")
        from explain_api.render import colormap_lut

        colormap_lut(self.colormap)  # ValueError naming the allowed colormaps


@dataclass(frozen=True)
class VideoMeta:
    """What the container says before any frame is decoded."""

    codec: str  # "gif" or ffmpeg's codec name, e.g. "h264"
    width: int
    height: int
    fps: float
    duration_s: float | None
    frames_hint: int | None  # exact for GIF, duration x fps for the rest (may be off by a frame or two)


@dataclass(frozen=True)
class FrameLabel:
    """The caption of one frame: the top-1 prediction and the explained class."""

    index: int
    class_index: int  # explained class
    label: str
    score: float
    predicted_label: str
    predicted_score: float


@dataclass(frozen=True)
class VideoReport:
    """What ``explain_video`` did."""

    model: str
    version: int | None
    method: str
    params: dict[str, Any]
    via: str
    format: str  # output container: "mp4" | "gif"
    frames: int
    fps: float  # of the output (GIF: from the mean frame duration)
    width: int
    height: int
    source: VideoMeta
    calls: int  # model-server calls made for the explanations (Predict on explain_<method>)
    chunks: int
    seconds: float
    labels: tuple[FrameLabel, ...] = field(repr=False)

    def label_counts(self) -> dict[str, int]:
        """Frames per predicted label, most frequent first."""
        return dict(Counter(f.predicted_label for f in self.labels).most_common())


def output_format(path: str | Path) -> str:
    """The output container named by a file name's extension; 400 for anything else."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in OUTPUT_FORMATS:
        raise ApiError(400, f"output must end in {' or '.join('.' + f for f in OUTPUT_FORMATS)}, got {str(path)!r}")
    return suffix


# ------------------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class _Frame:
    rgb: np.ndarray  # uint8 [H, W, 3]
    duration_ms: float


def _sniff(path: Path) -> str:
    """Which decoder, ``gif`` or ``ffmpeg``; 400 for still images and empty files."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise ApiError(400, f"cannot read {path}: {e.strerror or e}") from e
    if not head:
        raise ApiError(400, "empty video: no bytes")
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    for magic, name in _STILL_MAGIC:
        if head.startswith(magic):
            raise ApiError(400, f"this is a still {name} image, not a video; explain it with :explain")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise ApiError(400, "this is a still WebP image, not a video; explain it with :explain")
    return "ffmpeg"


def _check_limits(meta: VideoMeta, limits: VideoLimits) -> None:
    pixels = meta.width * meta.height
    if limits.max_frame_pixels is not None and pixels > limits.max_frame_pixels:
        raise ApiError(
            413, f"frames are {meta.width}x{meta.height} = {pixels} pixels; the limit is {limits.max_frame_pixels}"
        )
    if limits.max_seconds is not None and meta.duration_s is not None and meta.duration_s > limits.max_seconds:
        raise ApiError(413, f"the video lasts {meta.duration_s:.2f} s; the limit is {limits.max_seconds:g} s")
    if limits.max_frames is not None and meta.frames_hint is not None and meta.frames_hint > limits.max_frames:
        raise ApiError(413, f"the video has about {meta.frames_hint} frames; the limit is {limits.max_frames}")


def _gif_durations(im: Any) -> list[float]:
    durations = []
    for i in range(getattr(im, "n_frames", 1)):
        im.seek(i)
        durations.append(float(im.info.get("duration") or _GIF_DEFAULT_MS))
    im.seek(0)
    return durations


def _gif_meta(path: Path) -> tuple[VideoMeta, list[float]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path, formats=["GIF"]) as im:
            width, height = im.size
            durations = _gif_durations(im)
    except UnidentifiedImageError as e:
        raise ApiError(400, "not a decodable GIF") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ApiError(400, f"corrupt GIF: {e}") from e
    total_s = sum(durations) / 1000.0
    fps = len(durations) / total_s if total_s > 0 else 1000.0 / _GIF_DEFAULT_MS
    return VideoMeta("gif", width, height, fps, total_s, len(durations)), durations


def _gif_frames(path: Path, durations: Sequence[float]) -> Iterator[_Frame]:
    from PIL import Image

    from explain_api.images import _to_rgb  # alpha and palettes exactly as still uploads are handled

    with Image.open(path, formats=["GIF"]) as im:
        for i, duration in enumerate(durations):
            try:
                im.seek(i)
                rgb = np.array(_to_rgb(im.convert("RGBA")), dtype=np.uint8)
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise ApiError(400, f"corrupt GIF frame {i + 1}: {e}") from e
            yield _Frame(rgb, duration)


_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO_STREAM_RE = re.compile(r"Stream #\d+:\d+.*?: Video: ([^\s,]+)(.*)$", re.MULTILINE)
_SIZE_RE = re.compile(r", (\d+)x(\d+)(?=[\s,]|$)")
_RATE_RE = re.compile(r"([\d.]+)(k?) (fps|tbr)")
_ROTATION_RE = re.compile(r"rotation of (-?[\d.]+) degrees", re.IGNORECASE)


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg

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
        raise ApiError(400, f"ffmpeg could not read the video header in {_PROBE_TIMEOUT_S:g} s") from e
    text = run.stderr.decode("utf-8", "replace")
    meta = _parse_header(text)
    if meta is None:
        if "Stream #" in text:
            raise ApiError(400, "not a decodable video: it has no video stream")
        raise ApiError(400, f"not a decodable video (ffmpeg: {_ffmpeg_error(text)})")
    if meta.width <= 0 or meta.height <= 0:
        raise ApiError(400, f"not a decodable video: frames of {meta.width}x{meta.height}")
    return meta


def _ffmpeg_frames(path: Path, meta: VideoMeta) -> Iterator[_Frame]:
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
                    raise ApiError(400, f"corrupt video: frame {count + 1} is incomplete")
                count += 1
                yield _Frame(np.frombuffer(raw, dtype=np.uint8).reshape(meta.height, meta.width, 3), duration)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=_PROBE_TIMEOUT_S)
        if count == 0:
            log.seek(0)
            details = _ffmpeg_error(log.read().decode("utf-8", "replace"))
            raise ApiError(400, f"no frame could be decoded (ffmpeg: {details})")


def _open(path: Path, limits: VideoLimits) -> tuple[VideoMeta, Iterator[_Frame]]:
    if limits.max_bytes is not None:
        try:
            size = path.stat().st_size
        except OSError as e:
            raise ApiError(400, f"cannot read {path}: {e.strerror or e}") from e
        if size > limits.max_bytes:
            raise ApiError(413, f"the video has {size} bytes; the limit is {limits.max_bytes}")
    if _sniff(path) == "gif":
        meta, durations = _gif_meta(path)
        _check_limits(meta, limits)
        return meta, _gif_frames(path, durations)
    meta = _ffmpeg_probe(path)
    _check_limits(meta, limits)
    return meta, _ffmpeg_frames(path, meta)


def read_frames(path: str | Path, limits: VideoLimits | None = None) -> tuple[VideoMeta, Iterator[np.ndarray]]:
    """The metadata and a generator of RGB ``uint8`` frames (streamed, one at a time) of a video or GIF."""
    meta, frames = _open(Path(path), limits or VideoLimits(None, None, None, None))
    return meta, (f.rgb for f in frames)


# ------------------------------------------------------------------------------------------------------ writing


class _Mp4Sink:
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
            raise ApiError(400, f"frame size changed mid-stream to {w}x{h}")
        if w % 2 or h % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
        except BrokenPipeError as e:
            self._proc.wait(timeout=_FFMPEG_TIMEOUT_S)
            raise RuntimeError(f"the H.264 encoder stopped: {self._ffmpeg_said()}") from e

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
            raise RuntimeError(f"the H.264 encoder did not finish in {_FFMPEG_TIMEOUT_S:g} s") from None
        if code != 0:
            raise RuntimeError(f"the H.264 encoder failed ({code}): {self._ffmpeg_said()}")
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


class _GifSink:
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
        from PIL import Image

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
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def caption_frame(rgb: np.ndarray, text: str) -> np.ndarray:
    """``rgb`` with ``text`` in white on a dark band across its top (the band is blended, the picture stays)."""
    from PIL import Image, ImageDraw

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


def _caption_text(label: FrameLabel) -> str:
    text = f"{label.predicted_label} {label.predicted_score:.2f}"
    if label.label != label.predicted_label:
        text += f"  (explaining {label.label} {label.score:.2f})"
    return text


# ------------------------------------------------------------------------------------------------------ explain


class _CallCounter:
    """The serving client with its Predict calls (explain_* and black-box occlusion batches) counted."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls = 0

    def explain(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._client.explain(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._client.predict(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _chunks(frames: Iterator[_Frame], size: int, limit: int | None) -> Iterator[list[_Frame]]:
    chunk: list[_Frame] = []
    for count, frame in enumerate(frames, start=1):
        if limit is not None and count > limit:
            raise ApiError(413, f"the video has more than {limit} frames; the limit is {limit}")
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _temp_path(destination: Path) -> Path:
    return destination.with_name(f".{destination.stem}.{os.getpid()}.partial{destination.suffix}")


def explain_video(
    client: ServingClientLike,
    catalog: ModelCatalog,
    ref: ModelRef,
    source: str | Path,
    destination: str | Path,
    spec: ExplainSpec,
    *,
    options: VideoOptions | None = None,
    limits: VideoLimits | None = None,
    on_start: Callable[[VideoMeta], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> VideoReport:
    """Explain every frame of ``source`` and write the captioned overlays to ``destination`` (.mp4 or .gif).

    ``client``/``catalog``/``ref``/``spec`` are those of ``service.explain_images`` (a serving client, a
    ``ModelCatalog``, a ``ModelRef`` and an ``ExplainSpec``). The version the catalog resolves first is used for
    every chunk. ``destination`` appears only when the whole video succeeded (written under a temporary name, then
    renamed). ``on_start`` gets the source metadata before the first frame; ``progress`` the frames done after each
    chunk. Bad input raises ``ApiError`` (400/413/422), model-server failures ``glimpse_wire.errors.ServingError``.
    """
    from explain_api import render, service
    from explain_api.images import DecodedImage

    options = options or VideoOptions()
    limits = limits or VideoLimits(None, None, None, None)
    started = time.perf_counter()
    destination = Path(destination)
    fmt = output_format(destination)
    service.validate_method(spec.method)
    meta, frames = _open(Path(source), limits)  # bad files fail here, before the model server is asked
    temp = _temp_path(destination)
    sink: _Mp4Sink | _GifSink = _Mp4Sink(temp, meta.fps, options.crf) if fmt == "mp4" else _GifSink(temp)
    counter = _CallCounter(client)
    labels: list[FrameLabel] = []
    outcome = None
    chunks = 0
    try:
        try:
            info = catalog.get(ref)
            if info.version is not None:  # one version for the whole video, even if a new one loads meanwhile
                ref = service.ModelRef(ref.name, version=info.version)
            if on_start is not None:
                on_start(meta)
            for chunk in _chunks(frames, options.batch_size, limits.max_frames):
                images = [DecodedImage(rgb=f.rgb, format="VIDEO", n_bytes=f.rgb.nbytes) for f in chunk]
                outcome = service.explain_images(
                    counter,
                    catalog,
                    ref,
                    images,
                    spec,
                    top_k=1,
                    budget=options.budget,
                    timeout_s=options.timeout_s,
                    size_factor=options.size_factor,
                )
                chunks += 1
                for frame, item in zip(chunk, outcome.images, strict=True):
                    top = item.predictions[0]
                    label = FrameLabel(len(labels), item.class_index, item.label, item.score, top.label, top.score)
                    labels.append(label)
                    picture = render.overlay(
                        frame.rgb, item.heatmap, colormap=options.colormap, image_weight=options.image_weight
                    )
                    if options.caption:
                        picture = caption_frame(picture, _caption_text(label))
                    sink.write(picture, frame.duration_ms)
                if progress is not None:
                    progress(len(chunk))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
        if not labels:
            raise ApiError(400, "the video has no frames")
        sink.close()
        os.replace(temp, destination)
    except BaseException:
        sink.abort()
        temp.unlink(missing_ok=True)
        raise
    assert outcome is not None
    return VideoReport(
        model=outcome.name,
        version=outcome.version,
        method=outcome.method,
        params=dict(outcome.params),
        via=outcome.via,
        format=fmt,
        frames=len(labels),
        fps=sink.fps,
        width=meta.width + (meta.width % 2 if fmt == "mp4" else 0),
        height=meta.height + (meta.height % 2 if fmt == "mp4" else 0),
        source=meta,
        calls=counter.calls,
        chunks=chunks,
        seconds=time.perf_counter() - started,
        labels=tuple(labels),
    )


# ---------------------------------------------------------------------------------------------------------- CLI


def _param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def configure_explain_video(parser: argparse.ArgumentParser) -> None:
    """Flags of ``glimpse explain-video`` (imports nothing heavy)."""
    parser.add_argument("input", type=Path, metavar="INPUT", help="video file: MP4, WebM, MOV, AVI, MKV or GIF")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT", help="output file, .mp4 or .gif")
    parser.add_argument("--model", required=True, help="served model name")
    version = parser.add_mutually_exclusive_group()
    version.add_argument("--model-version", type=int, default=None, help="model version (default: latest)")
    version.add_argument("--version-label", default=None, help="model version label, e.g. stable")
    parser.add_argument("--method", default="gradcam", choices=c.EXPLAIN_METHODS, help="explanation method")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--class-index", type=int, default=None, help="class to explain (default: each frame's top)")
    target.add_argument("--target-label", default=None, help="class to explain, by label")
    parser.add_argument(
        "--param", type=_param, action="append", default=[], metavar="NAME=VALUE", help="method parameter (repeat)"
    )
    parser.add_argument(
        "--serving-address",
        default=None,
        metavar="HOST:PORT",
        help="gRPC address of TF Serving or `glimpse serve` (env SERVING_ADDRESS, default localhost:8500)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="frames per model call (default 8)")
    parser.add_argument("--colormap", default="viridis", help="viridis or jet (default viridis)")
    parser.add_argument("--image-weight", type=float, default=0.7, help="weight of the frame under the heatmap")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per model call (default 60)")
    parser.add_argument("--max-frames", type=int, default=None, help="refuse longer videos (default: any)")
    parser.add_argument("--no-caption", action="store_true", help="do not write the prediction on the frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _progress_bar(enabled: bool) -> tuple[Callable[[VideoMeta], None], Callable[[int], None], Callable[[], None]]:
    state: dict[str, Any] = {}

    def on_start(meta: VideoMeta) -> None:
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:  # the API image has no tqdm: no bar
            return
        state["bar"] = tqdm(total=meta.frames_hint, unit="frame", desc="explain-video", file=sys.stderr)

    def update(n: int) -> None:
        if "bar" in state:
            state["bar"].update(n)

    def close() -> None:
        if "bar" in state:
            state.pop("bar").close()

    return on_start, update, close


def _summary(report: VideoReport, out: Path) -> str:
    counts = ", ".join(f"{label} {n}" for label, n in report.label_counts().items())
    return (
        f"wrote {out}: {report.frames} frames, {report.width}x{report.height}, {report.fps:g} fps ({report.format})\n"
        f"model {report.model} v{report.version}, {report.method} via {report.via}: {report.calls} model calls "
        f"for {report.chunks} chunks, {report.seconds:.2f} s ({report.frames / max(report.seconds, 1e-9):.1f} "
        f"frames/s)\npredicted: {counts}"
    )


def run_explain_video(args: argparse.Namespace) -> int:
    """Explain a video through a model server; exit 2 on bad input, 1 when the model server fails."""
    from explain_api import service
    from explain_api.parsing import parse_version_label
    from glimpse_wire.client import ClientConfig, ServingClient
    from glimpse_wire.errors import ServingError

    prog = "glimpse explain-video"
    try:
        options = VideoOptions(
            batch_size=args.batch_size,
            colormap=args.colormap,
            image_weight=args.image_weight,
            caption=not args.no_caption,
            timeout_s=args.timeout,
        )
        if not args.timeout > 0:
            raise ValueError(f"--timeout must be > 0, got {args.timeout}")
        if args.model_version is not None and args.model_version < 0:
            raise ValueError(f"--model-version must be >= 0, got {args.model_version}")
        limits = VideoLimits(max_frames=args.max_frames, max_seconds=None, max_frame_pixels=None, max_bytes=None)
        output_format(args.out)
        if not args.input.is_file():
            raise ValueError(f"no such file: {args.input}")
        ref = service.ModelRef(args.model, args.model_version, parse_version_label(args.version_label))
        address = args.serving_address or os.environ.get("SERVING_ADDRESS") or "localhost:8500"
        client = ServingClient(ClientConfig(address=address, timeout_s=args.timeout))
    except (ValueError, ApiError) as e:
        print(f"{prog}: {getattr(e, 'message', e)}", file=sys.stderr)
        return 2
    spec = service.ExplainSpec(
        method=args.method, params=dict(args.param), class_index=args.class_index, label=args.target_label
    )
    on_start, update, close_bar = _progress_bar(not args.no_progress)
    try:
        catalog = service.ModelCatalog(client, timeout_s=args.timeout)
        report = explain_video(
            client,
            catalog,
            ref,
            args.input,
            args.out,
            spec,
            options=options,
            limits=limits,
            on_start=on_start,
            progress=update,
        )
    except ApiError as e:
        close_bar()
        print(f"{prog}: {e.message}", file=sys.stderr)
        return 2 if e.status < 500 else 1
    except ServingError as e:
        close_bar()
        print(f"{prog}: model server: {e.code}: {e.message}", file=sys.stderr)
        return 2 if e.code in ("NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION") else 1
    except RuntimeError as e:  # the encoder failed (disk full, ...)
        close_bar()
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    close_bar()
    print(_summary(report, args.out))
    return 0
