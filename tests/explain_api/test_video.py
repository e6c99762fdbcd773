"""Video explanations: a clip that pans across a real Tux Paint photo (12 frames, 10 fps, written as MP4 and GIF by
imageio), explained through the fake serving layer (unit tests) and through a real `glimpse serve` with the session's
exported model (CLI and API, slow/integration). Outputs are read back with imageio, independently of the module."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from explain_api import service
from explain_api.app import create_app
from explain_api.config import ApiConfig
from explain_api.errors import status_for
from explain_api.exceptions import BadModelOutput, ExplainError, UnknownMethod, UnsupportedModel
from explain_api.video import VideoOptions, configure_explain_video, exit_code, explain_video
from glimpse.cli import main as glimpse_main
from glimpse_wire import contract as c
from glimpse_wire.client import ModelRef
from glimpse_wire.errors import InvalidArgument, NotFound, Unavailable
from rendering.errors import EncoderError, InvalidImage, InvalidVideo, RenderingError, VideoTooLarge
from rendering.video import VideoLimits, output_format, read_frames
from tests.explain_api.fakes import FakeServing
from tests.rendering.conftest import TUX_STAMPS

ROOT = Path(__file__).resolve().parents[2]
PHOTO = TUX_STAMPS / "vehicles/emergency/firetruck.png"
FRAMES, FPS, HEIGHT, WIDTH = 12, 10, 160, 240


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # uint8 [N, H, W, 3], what was encoded
    mp4: Path
    gif: Path


def _photo_on_grey() -> np.ndarray:
    if not PHOTO.is_file():
        pytest.skip(f"tuxpaint-stamps-default is not installed ({PHOTO})")
    with Image.open(PHOTO) as raw:
        rgba = raw.convert("RGBA")
    grey = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
    return np.asarray(Image.alpha_composite(grey, rgba).convert("RGB"))


def pan(photo: np.ndarray, n: int, height: int, width: int) -> np.ndarray:
    """``n`` crops of height x width sliding from the photo's left edge to its right edge."""
    top = (photo.shape[0] - height) // 2
    lefts = np.linspace(0, photo.shape[1] - width, n).round().astype(int)
    return np.stack([photo[top : top + height, x : x + width] for x in lefts])


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    frames = pan(_photo_on_grey(), FRAMES, HEIGHT, WIDTH)
    folder = tmp_path_factory.mktemp("clip")
    mp4, gif = folder / "pan.mp4", folder / "pan.gif"
    iio.imwrite(mp4, frames, plugin="FFMPEG", fps=FPS, codec="libx264", macro_block_size=1)
    iio.imwrite(gif, frames, plugin="pillow", duration=1000 // FPS, loop=0)
    return Clip(frames, mp4, gif)


def read_mp4(path: Path) -> tuple[np.ndarray, float]:
    """All frames (RGB) and the frame rate, read by OpenCV's own FFmpeg build (independent of the module)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        assert capture.isOpened(), f"OpenCV cannot open {path}"
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        frames = []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(bgr[..., ::-1])
    finally:
        capture.release()
    return np.stack(frames), fps


def gif_durations(path: Path) -> list[int]:
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            out.append(int(im.info["duration"]))
    return out


def assert_overlays_of(out: np.ndarray, source: np.ndarray) -> None:
    """Each output frame is its own source frame with a heatmap on top: changed, yet closer to its own frame than
    to the frame at the other end of the pan (so the order and the picture are kept)."""
    assert out.shape == source.shape
    grey_out, grey_src = out.astype(np.float64).mean(-1), source.astype(np.float64).mean(-1)
    for i in range(len(out)):
        assert np.abs(out[i].astype(np.int16) - source[i]).mean() > 10, f"frame {i} looks unchanged"
        own = np.corrcoef(grey_out[i].ravel(), grey_src[i].ravel())[0, 1]
        other = np.corrcoef(grey_out[i].ravel(), grey_src[len(out) - 1 - i].ravel())[0, 1]
        assert own > 0.5 and (i == len(out) - 1 - i or own > other), (i, own, other)


# ---------------------------------------------------------------------------------------------- unit (fake model)


def _explain(fake: FakeServing, source: Path, destination: Path, **kw: object):
    options = kw.pop("options", VideoOptions(batch_size=5))
    return explain_video(
        fake,
        service.ModelCatalog(fake),
        ModelRef("tiny"),
        source,
        destination,
        service.ExplainSpec(method=str(kw.pop("method", "gradcam"))),
        options=options,
        **kw,
    )


def test_mp4_keeps_frames_fps_and_size_in_one_call_per_chunk(clip: Clip, tmp_path: Path) -> None:
    fake = FakeServing()
    out = tmp_path / "out.mp4"
    report = _explain(fake, clip.mp4, out)
    calls = [call for call in fake.calls_of("Predict") if call.signature == "explain_gradcam"]
    assert [call.batch for call in calls] == [5, 5, 2]
    assert report.calls == len(calls) == report.chunks == math.ceil(FRAMES / 5)
    frames, fps = read_mp4(out)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and fps == FPS
    assert (report.frames, report.fps, report.width, report.height) == (FRAMES, FPS, WIDTH, HEIGHT)
    source, _ = read_mp4(clip.mp4)  # the decoded input (H.264 is lossy both ways)
    assert_overlays_of(frames, source)
    assert {f.predicted_label for f in report.labels} <= {"red", "green", "blue"}
    assert sum(report.label_counts().values()) == FRAMES


def test_gif_in_gif_out_keeps_frame_durations(clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.gif"
    report = _explain(FakeServing(), clip.gif, out, options=VideoOptions(batch_size=8, caption=False))
    assert gif_durations(out) == gif_durations(clip.gif) == [100] * FRAMES
    frames = iio.imread(out, index=None, plugin="pillow", mode="RGB")
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and report.calls == 2
    assert_overlays_of(frames, clip.frames)


def test_variable_gif_durations_pass_through(tmp_path: Path) -> None:
    photo = _photo_on_grey()
    frames = pan(photo, 4, 64, 96)
    source = tmp_path / "var.gif"
    iio.imwrite(source, frames, plugin="pillow", duration=[50, 200, 100, 300], loop=0)
    meta, decoded = read_frames(source)
    assert (meta.frames_hint, meta.duration_s, meta.width, meta.height) == (4, 0.65, 96, 64)
    assert len(list(decoded)) == 4
    _explain(FakeServing(), source, tmp_path / "out.gif")
    assert gif_durations(tmp_path / "out.gif") == [50, 200, 100, 300]


def test_gif_delays_in_centiseconds_keep_the_clip_length(tmp_path: Path) -> None:
    source = tmp_path / "eight.mp4"
    iio.imwrite(source, pan(_photo_on_grey(), 8, 64, 96), plugin="FFMPEG", fps=8, codec="libx264", macro_block_size=1)
    report = _explain(FakeServing(), source, tmp_path / "out.gif")
    durations = gif_durations(tmp_path / "out.gif")
    assert sum(durations) == 1000 and set(durations) == {120, 130} and report.fps == 8


def test_odd_frame_sizes_are_padded_to_even_for_h264(tmp_path: Path) -> None:
    frames = pan(_photo_on_grey(), 3, 61, 93)
    source = tmp_path / "odd.gif"
    iio.imwrite(source, frames, plugin="pillow", duration=40, loop=0)
    report = _explain(FakeServing(), source, tmp_path / "odd.mp4")
    out, fps = read_mp4(tmp_path / "odd.mp4")
    assert out.shape == (3, 62, 94, 3) and (report.width, report.height) == (94, 62) and fps == 25


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"this is not a video", 400, "not a decodable video"),
        (b"", 400, "empty video"),
        (b"\x89PNG\r\n\x1a\n" + bytes(32), 400, "still PNG image"),
        (b"GIF89a" + bytes(40), 400, "GIF"),
    ],
)
def test_inputs_that_are_not_videos_are_400(tmp_path: Path, data: bytes, status: int, message: str) -> None:
    source = tmp_path / "input"
    source.write_bytes(data)
    fake = FakeServing()
    with pytest.raises(InvalidVideo) as err:
        _explain(fake, source, tmp_path / "out.mp4")
    assert (status_for(err.value)[0], message in err.value.message) == (status, True), err.value.message
    assert fake.calls == [] and list(tmp_path.iterdir()) == [source]


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (VideoLimits(max_frames=5), "limit is 5"),
        (VideoLimits(max_seconds=0.5), "limit is 0.5 s"),
        (VideoLimits(max_frame_pixels=100 * 100), "limit is 10000"),
        (VideoLimits(max_bytes=1000), "limit is 1000"),
    ],
)
def test_limits_are_413_and_leave_no_file(clip: Clip, tmp_path: Path, limits: VideoLimits, message: str) -> None:
    with pytest.raises(VideoTooLarge) as err:
        _explain(FakeServing(), clip.mp4, tmp_path / "out.mp4", limits=limits)
    assert status_for(err.value)[0] == 413 and message in err.value.message, err.value.message
    assert list(tmp_path.iterdir()) == []


def test_frame_limit_holds_while_streaming_when_the_header_says_nothing(clip: Clip, tmp_path: Path) -> None:
    """A raw H.264 stream has no duration: the frame limit is then counted frame by frame (here: in chunk 2)."""
    raw = tmp_path / "pan.h264"
    iio.imwrite(raw, clip.frames, plugin="FFMPEG", fps=FPS, codec="libx264", macro_block_size=1,
                output_params=["-f", "h264"])  # fmt: skip
    meta, frames = read_frames(raw)
    assert (meta.duration_s, meta.frames_hint, len(list(frames))) == (None, None, FRAMES)
    fake = FakeServing()
    with pytest.raises(VideoTooLarge, match="more than 7 frames") as err:
        _explain(fake, raw, tmp_path / "out.gif", limits=VideoLimits(max_frames=7))
    assert status_for(err.value)[0] == 413 and len(fake.calls_of("Predict")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pan.h264"]


def test_unknown_method_and_output_format_are_400(clip: Clip, tmp_path: Path) -> None:
    with pytest.raises(UnknownMethod, match="unknown method 'lime'") as err:
        _explain(FakeServing(), clip.mp4, tmp_path / "out.mp4", method="lime")
    assert status_for(err.value)[0] == 400
    with pytest.raises(InvalidVideo, match=r"\.mp4 or \.gif") as bad:
        output_format(tmp_path / "out.avi")
    assert status_for(bad.value)[0] == 400
    with pytest.raises(ValueError, match="batch_size"):
        VideoOptions(batch_size=0)


def test_limits_from_the_environment() -> None:
    config = ApiConfig.from_env({"GLIMPSE_VIDEO_MAX_FRAMES": "50", "GLIMPSE_VIDEO_MAX_SECONDS": "0"})
    limits = config.video_limits
    assert (limits.max_frames, limits.max_seconds, limits.max_bytes) == (50, None, VideoLimits().max_bytes)
    assert ApiConfig().video_limits == VideoLimits()
    with pytest.raises(ValueError, match="GLIMPSE_VIDEO_MAX_BYTES"):
        ApiConfig.from_env({"GLIMPSE_VIDEO_MAX_BYTES": "lots"})
    with pytest.raises(ValueError, match="video_max_frames"):
        ApiConfig(video_max_frames=0)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidVideo("x"), 2),
        (VideoTooLarge("x"), 2),
        (InvalidImage("x"), 2),
        (UnknownMethod("x"), 2),
        (UnsupportedModel("x"), 2),
        (ValueError("x"), 2),
        (NotFound("x"), 2),
        (InvalidArgument("x"), 2),
        (BadModelOutput("x"), 1),
        (EncoderError("x"), 1),
        (Unavailable("x"), 1),
        (RuntimeError("x"), 1),
    ],
)
def test_cli_exit_codes_come_from_the_domain_errors(error: Exception, code: int) -> None:
    """Bad input (the user's to fix) exits 2, failures of the model server or the machine 1: the same split as the
    4xx / 5xx statuses of the API, decided without them."""
    assert exit_code(error) == code
    row = status_for(error)
    if isinstance(error, (RenderingError, ExplainError)) and not isinstance(error, EncoderError):
        assert (row[0] < 500) == (code == 2), row


# ----------------------------------------------------------------------------------------------- API (fake model)


@pytest.fixture
def video_app(make_app: Callable[..., object]):
    return make_app()


def test_route_returns_mp4_with_headers(video_app, fake: FakeServing, clip: Clip, tmp_path: Path) -> None:
    response = video_app.test_client().post(
        "/v1/models/tiny:explain-video?batch_size=5", data=clip.mp4.read_bytes(), content_type="video/mp4"
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "video/mp4"
    h = response.headers
    assert (h["X-Glimpse-Frames"], h["X-Glimpse-Fps"], h["X-Glimpse-Calls"], h["X-Glimpse-Version"]) == (
        "12", "10", "3", "1",
    )  # fmt: skip
    out = tmp_path / "answer.mp4"
    out.write_bytes(response.data)
    frames, fps = read_mp4(out)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and fps == FPS
    default = c.explain_signature(c.DEFAULT_EXPLAIN_METHOD)  # no method in the request: the model's default
    assert len([call for call in fake.calls_of("Predict") if call.signature == default]) == 3


def test_route_multipart_gif_by_accept_header(video_app, clip: Clip) -> None:
    response = video_app.test_client().post(
        "/v1/models/tiny/labels/stable:explain-video",
        data={"video": (clip.gif.open("rb"), "pan.gif"), "method": "occlusion", "patch_size": "8", "caption": "no"},
        content_type="multipart/form-data",
        headers={"Accept": "image/gif"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "image/gif" and response.headers["X-Glimpse-Method"] == "occlusion"
    assert response.data.startswith(b"GIF89a") and response.headers["X-Glimpse-Calls"] == "2"


@pytest.mark.parametrize(
    ("body", "content_type", "query", "status", "fragment"),
    [
        ("junk", "video/mp4", {}, 400, "not a decodable video"),
        ("clip", "text/plain", {}, 415, "unsupported content type"),
        ("clip", "video/mp4", {"format": "avi"}, 400, "unknown format"),
        ("clip", "video/mp4", {"method": "lime"}, 400, "unknown method"),
        ("clip", "video/mp4", {"batch_size": "0"}, 400, "batch_size"),
        ("clip", "video/mp4", {"caption": "maybe"}, 400, "caption"),
        ("form", "multipart/form-data", {}, 400, "field 'video'"),
    ],
)
def test_route_bad_requests(video_app, clip: Clip, body, content_type, query, status, fragment) -> None:
    data = {
        "junk": b"not a video",
        "clip": clip.mp4.read_bytes(),
        "form": {"image": (io.BytesIO(clip.mp4.read_bytes()), "a.mp4")},
    }[body]
    response = video_app.test_client().post(
        "/v1/models/tiny:explain-video", data=data, content_type=content_type, query_string=query
    )
    assert response.status_code == status, response.get_data(as_text=True)
    assert fragment in response.get_json()["error"]["message"]


def test_route_limits_come_from_the_environment(monkeypatch, fake: FakeServing, clip: Clip) -> None:
    monkeypatch.setenv("GLIMPSE_VIDEO_MAX_FRAMES", "5")
    app = create_app(ApiConfig.from_env(default_model="tiny"), fake)
    response = app.test_client().post("/v1/models/tiny:explain-video", data=clip.mp4.read_bytes(),
                                      content_type="video/mp4")  # fmt: skip
    assert response.status_code == 413 and "limit is 5" in response.get_json()["error"]["message"]
    assert fake.calls_of("Predict") == []


def test_route_limits_come_from_the_one_config(fake: FakeServing, clip: Clip) -> None:
    app = create_app(ApiConfig(default_model="tiny", video_max_bytes=1000), fake)
    response = app.test_client().post("/v1/models/tiny:explain-video", data=clip.mp4.read_bytes(),
                                      content_type="video/mp4")  # fmt: skip
    assert response.status_code == 413 and "limit is 1000" in response.get_json()["error"]["message"]
    assert fake.calls_of("Predict") == []


# ---------------------------------------------------------------------------------------------------------- CLI


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.mp4"
    text.write_bytes(b"not a video at all")
    base = ["explain-video", "--model", "tiny", "--serving-address", "127.0.0.1:1", "--no-progress"]
    assert glimpse_main([*base, str(text), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "not a decodable video" in capsys.readouterr().err
    assert glimpse_main([*base, str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert glimpse_main([*base, str(text), "--out", str(tmp_path / "o.avi")]) == 2
    assert ".mp4 or .gif" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        glimpse_main([*base, str(text), "--out", str(tmp_path / "o.mp4"), "--method", "lime"])
    assert exit_.value.code == 2 and "invalid choice: 'lime'" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_cli_flags_parse() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    configure_explain_video(parser)
    args = parser.parse_args(["in.mp4", "--out", "o.gif", "--model", "m", "--param", "patch_size=8", "--param", "x=1"])
    assert (args.batch_size, args.method, args.param) == (8, None, [("patch_size", "8"), ("x", "1")])  # None: default


# ---------------------------------------------------------------------------- real model server (slow, integration)


@pytest.mark.slow
@pytest.mark.integration
def test_cli_against_a_real_server(served, clip: Clip, tmp_path: Path) -> None:
    """`glimpse explain-video` end to end, in a fresh process that must not import TensorFlow."""
    out = tmp_path / "explained.mp4"
    argv = ["explain-video", str(clip.mp4), "--model", served.name, "--serving-address", served.address,
            "--out", str(out), "--batch-size", "5"]  # fmt: skip
    code = (
        "import sys\nfrom glimpse.cli import main\n"
        f"rc = main({argv!r})\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert re.search(r"12/12", run.stderr), run.stderr[-1000:]  # the progress bar
    assert f"{math.ceil(FRAMES / 5)} model calls" in run.stdout and "12 frames, 240x160, 10 fps" in run.stdout
    frames, fps = read_mp4(out)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and fps == FPS
    assert_overlays_of(frames, read_mp4(clip.mp4)[0])
    predicted = re.search(r"predicted: (.*)", run.stdout).group(1)
    assert {part.rsplit(" ", 1)[0] for part in predicted.split(", ")} <= set(served.class_names)


@pytest.mark.slow
@pytest.mark.integration
def test_api_against_a_real_server_counts_one_grpc_call_per_chunk(served, clip: Clip, tmp_path: Path) -> None:
    app = create_app(ApiConfig(serving_address=served.address, default_model=served.name, timeout_s=60.0))
    client = app.test_client()
    response = client.post(
        f"/v1/models/{served.name}/versions/{served.version}:explain-video",
        data={"video": (clip.gif.open("rb"), "pan.gif"), "format": "gif"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "image/gif" and response.headers["X-Glimpse-Frames"] == str(FRAMES)
    out = tmp_path / "explained.gif"
    out.write_bytes(response.data)
    assert gif_durations(out) == [100] * FRAMES
    assert_overlays_of(iio.imread(out, index=None, plugin="pillow", mode="RGB"), clip.frames)
    metrics = client.get("/metrics").get_data(as_text=True)
    count = re.search(
        r'glimpse_api_grpc_duration_seconds_count\{code="OK",rpc="Predict",signature="'
        + c.explain_signature(c.DEFAULT_EXPLAIN_METHOD) + r'"\} (\S+)', metrics
    )
    assert count is not None and float(count.group(1)) == math.ceil(FRAMES / 8) == 2
    bad = client.post(f"/v1/models/{served.name}:explain-video?method=lime", data=clip.mp4.read_bytes(),
                      content_type="video/mp4")  # fmt: skip
    assert bad.status_code == 400 and "unknown method" in bad.get_json()["error"]["message"]
