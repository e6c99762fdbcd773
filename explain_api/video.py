"""Explain a short video frame by frame through the served model: ``explain_video`` and ``glimpse explain-video``.

``rendering.video`` reads the clip (ffmpeg or Pillow, streamed, checked against ``VideoLimits``) and writes the
result; this module does the explaining in between. Every ``batch_size`` frames become one batched call of the model's
``explain_<method>`` signature (``service.explain_images``, the same domain function as ``:explain``; a chunk is only
split when its PNGs exceed the gRPC message budget). Each explained frame is blended with its heatmap
(``rendering.render.overlay``), captioned with the predicted label and score, and written at once. Only one chunk of
frames is held in memory, except for GIF output, whose palette frames Pillow keeps until the file is written.

``explain_video`` is shared by ``glimpse explain-video`` (``configure_explain_video`` / ``run_explain_video``, with a
progress bar) and the API route of ``video_routes``. Neither imports TensorFlow. Failures are domain errors
(``explain_api.exceptions``, ``rendering.errors``) or ``glimpse_wire.errors.ServingError``; the command line maps
them to exit codes (``exit_code``), the API to statuses (``explain_api.errors``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explain_api import service
from explain_api.exceptions import BadModelOutput, ExplainError
from explain_api.service import ExplainSpec, ModelCatalog, ServingClientLike
from glimpse_wire import contract as c
from glimpse_wire.client import ClientConfig, ModelRef, ServingClient
from glimpse_wire.errors import ServingError
from rendering.errors import EncoderError, InvalidVideo, RenderingError, VideoTooLarge
from rendering.images import DecodedImage
from rendering.render import colormap_lut, overlay
from rendering.video import (
    Frame,
    VideoLimits,
    VideoMeta,
    caption_frame,
    open_video,
    open_writer,
    output_format,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "FrameLabel",
    "VideoOptions",
    "VideoReport",
    "configure_explain_video",
    "exit_code",
    "explain_video",
    "run_explain_video",
]

DEFAULT_BATCH_SIZE = 8


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
        colormap_lut(self.colormap)  # ValueError naming the allowed colormaps


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


def _chunks(frames: Iterator[Frame], size: int, limit: int | None) -> Iterator[list[Frame]]:
    chunk: list[Frame] = []
    for count, frame in enumerate(frames, start=1):
        if limit is not None and count > limit:
            raise VideoTooLarge(f"the video has more than {limit} frames; the limit is {limit}")
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
    chunk. Bad input raises ``rendering.errors.VideoError`` or an ``explain_api.exceptions.ExplainError``,
    model-server failures ``glimpse_wire.errors.ServingError``, a failing encoder ``rendering.errors.EncoderError``.
    """
    options = options or VideoOptions()
    limits = limits or VideoLimits.none()
    started = time.perf_counter()
    destination = Path(destination)
    fmt = output_format(destination)
    service.validate_method(spec.method)
    meta, frames = open_video(source, limits)  # bad files fail here, before the model server is asked
    temp = _temp_path(destination)
    sink = open_writer(temp, fmt, meta.fps, crf=options.crf)
    counter = _CallCounter(client)
    labels: list[FrameLabel] = []
    outcome = None
    chunks = 0
    try:
        try:
            info = catalog.get(ref)
            if info.version is not None:  # one version for the whole video, even if a new one loads meanwhile
                ref = ModelRef(ref.name, version=info.version)
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
                    picture = overlay(
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
            raise InvalidVideo("the video has no frames")
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
    """Flags of ``glimpse explain-video``."""
    parser.add_argument("input", type=Path, metavar="INPUT", help="video file: MP4, WebM, MOV, AVI, MKV or GIF")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT", help="output file, .mp4 or .gif")
    parser.add_argument("--model", required=True, help="served model name")
    version = parser.add_mutually_exclusive_group()
    version.add_argument("--model-version", type=int, default=None, help="model version (default: latest)")
    version.add_argument("--version-label", default=None, help="model version label, e.g. stable")
    parser.add_argument("--method", default=None, choices=c.EXPLAIN_METHODS,
                        help=f"explanation method (default: the model's default, {c.DEFAULT_EXPLAIN_METHOD} where "
                             "exported, else gradcam)")
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


# gRPC codes of the model server that mean the request was wrong (an unknown model, a bad input): the user's to fix.
_SERVING_INPUT_CODES = ("NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION")


def exit_code(error: BaseException) -> int:
    """The exit status of ``glimpse explain-video`` for a failure: 2 for bad input (a file, a flag, a parameter, a
    model that cannot do it), 1 for a failure of the model server or of this machine (the encoder)."""
    if isinstance(error, (EncoderError, BadModelOutput)):
        return 1
    if isinstance(error, (RenderingError, ExplainError, ValueError)):
        return 2
    if isinstance(error, ServingError):
        return 2 if error.code in _SERVING_INPUT_CODES else 1
    return 1


def _error_text(error: BaseException) -> str:
    if isinstance(error, ServingError):
        return f"model server: {error.code}: {error.message}"
    return str(getattr(error, "message", error))


def run_explain_video(args: argparse.Namespace) -> int:
    """Explain a video through a model server; exit 2 on bad input, 1 when the model server or the encoder fails."""
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
        ref = ModelRef(args.model, args.model_version, label=service.parse_version_label(args.version_label))
        address = args.serving_address or os.environ.get("SERVING_ADDRESS") or "localhost:8500"
        client = ServingClient(ClientConfig(address=address, timeout_s=args.timeout))
    except (ValueError, RenderingError, ExplainError) as e:
        print(f"{prog}: {_error_text(e)}", file=sys.stderr)
        return exit_code(e)
    spec = ExplainSpec(
        method=args.method, params=dict(args.param), class_index=args.class_index, label=args.target_label
    )
    on_start, update, close_bar = _progress_bar(not args.no_progress)
    try:
        catalog = ModelCatalog(client, timeout_s=args.timeout)
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
    except (RenderingError, ExplainError, ServingError, RuntimeError) as e:  # RuntimeError: the encoder failed
        close_bar()
        print(f"{prog}: {_error_text(e)}", file=sys.stderr)
        return exit_code(e)
    finally:
        client.close()
    close_bar()
    print(_summary(report, args.out))
    return 0
