"""Benchmarks of the explain API for ``glimpse bench`` (suite "api").

Measured side by side in one run, on one model (MobileNetV2 at 224x224, random weights: only the cost matters):

- Grad-CAM per image through HTTP -> gRPC -> the in-graph ``explain_gradcam`` signature, against tf-explain's
  ``GradCAM.explain`` in-process on the same Keras model (goal: ratio <= 0.15);
- occlusion per image through the API against tf-explain's ``OcclusionSensitivity`` (same patch size);
- a batched request of 8 images, per image, against single-image requests;
- the API process: cold start (spawn to a 200 from /healthz) and resident memory after serving (goal <= 150 MB);
- the limits of the API worker (issue "hostile input, outages and load"): peak resident memory of the worst single
  request the limits accept (three 6300x6300 one-bit PNGs, goal <= 300 MB), of 8 such requests at once (goal
  <= 600 MB; the memory budget answers 503 to what does not fit), the resident size after them against the warmed
  one (goal within 15%), the steady state over 2,000 Grad-CAM requests from 8 clients after 100 warm-up requests
  (goal <= 150 MB, growth <= 10%), and the time from the model server's AVAILABLE, after a kill -9 and a restart on
  the same port, to the first explanation answered 200 and the first /readyz 200 (goal <= 2 s).

This module never imports TensorFlow: building and exporting the model and running the tf-explain baseline happen
in a child Python process (the script below), the model server and the API are subprocesses too. It sits in the CLI
package, the top layer, because that child exports through ``training``, which the explain API may not import.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["limit_rows", "measure_limits", "run_api_benchmarks"]

_ROOT = Path(__file__).resolve().parents[1]  # the repository (this file is glimpse/bench_api.py)
_SIZE = 224
_PATCH = 28
_BATCH = 8

# The TensorFlow side, run as ``python -c`` in a child process: build, save and export the model, time tf-explain.
_TF_SIDE = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import warnings
warnings.filterwarnings("ignore")
import numpy as np
import keras
from training.export import export_classifier, find_gradcam_layer

out_dir, size, patch, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
keras.utils.set_random_seed(0)
inputs = keras.Input((size, size, 3))
scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
base = keras.applications.MobileNetV2(weights=None, input_tensor=scaled, classes=8)
model = keras.Model(inputs, base.output, name="mobilenet_v2_bench")
names = [f"class_{i}" for i in range(8)]
layer = find_gradcam_layer(model)
version_dir = export_classifier(model, names, out_dir, "bench", image_size=size, preprocessing="scale_-1_1",
                                gradcam_layer=layer)
from PIL import Image
import skimage.data
photo = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((size, size)), dtype=np.float32)[None]
from tf_explain.core.grad_cam import GradCAM
from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity

def timed(fn, n):
    fn()
    runs = []
    for _ in range(n):
        t = time.perf_counter(); fn(); runs.append(time.perf_counter() - t)
    return sorted(runs)[len(runs) // 2]

gradcam = timed(lambda: GradCAM().explain((photo, None), model, 0, layer), reps)
occlusion = timed(lambda: OcclusionSensitivity().explain((photo, None), model, 0, patch), max(1, reps // 3))
print("RESULT " + json.dumps({"version_dir": str(version_dir), "layer": layer, "gradcam_s": gradcam,
                              "occlusion_s": occlusion}))
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(_ROOT), "GLIMPSE_API_KEYS": ""}


def _tf_side(out_dir: Path, reps: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _TF_SIDE, str(out_dir), str(_SIZE), str(_PATCH), str(reps)],
        cwd=_ROOT, env=_env(), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"model export / tf-explain baseline failed:\n{proc.stderr[-3000:]}")


def _request(url: str, body: bytes | None = None, content_type: str = "", timeout: float = 120.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def _wait(check, timeout_s: float, what: str, proc: subprocess.Popen) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            if check():
                return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout_s} s")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _median(fn, n: int) -> float:
    fn()  # warm-up: metadata cache, first session run
    runs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def _photo_png() -> bytes:
    import io

    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buf, format="PNG")
    return buf.getvalue()


def measure_api(model_base: Path, name: str, *, reps: int) -> dict[str, float]:
    """Start `glimpse serve` on ``model_base`` (the directory of version dirs) and the API in front of it; time it."""
    grpc_port, http_port = _free_port(), _free_port()
    serving = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(grpc_port), "--rest_api_port", "0", "--model_name", name,
         "--model_base_path", str(model_base)],
        cwd=_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    api = None
    try:
        from glimpse_wire.client import ServingClient

        with ServingClient(f"127.0.0.1:{grpc_port}") as client:
            client.wait_until_available(name, timeout_s=300)
        base = f"http://127.0.0.1:{http_port}"
        api = subprocess.Popen(
            [sys.executable, "-m", "explain_api", "--host", "127.0.0.1", "--port", str(http_port),
             "--serving-address", f"127.0.0.1:{grpc_port}", "--default-model", name, "--timeout", "120"],
            cwd=_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        cold = _wait(lambda: _request(base + "/healthz", timeout=2)[0] == 200, 60, "glimpse api", api)
        photo = _photo_png()
        url = f"{base}/v1/models/{name}:explain"

        def explain(query: str, body: bytes, content_type: str) -> None:
            status, data = _request(f"{url}?{query}", body, content_type)
            if status != 200:
                raise RuntimeError(f"explain failed ({status}): {data[:300]!r}")

        gradcam = _median(lambda: explain("method=gradcam&heatmap_size=14", photo, "image/png"), reps)
        occlusion = _median(
            lambda: explain(f"method=occlusion&patch_size={_PATCH}&heatmap_size=14", photo, "image/png"),
            max(1, reps // 3),
        )
        import base64

        batch = json.dumps(
            {"images": [{"b64": base64.b64encode(photo).decode()}] * _BATCH, "method": "gradcam", "heatmap_size": 14}
        ).encode()
        batched = _median(lambda: explain("", batch, "application/json"), max(1, reps // 3)) / _BATCH
        workers = _children(api.pid)
        rss = max((_rss_mb(p) for p in workers), default=float("nan"))
        return {"cold_start_s": cold, "gradcam_s": gradcam, "occlusion_s": occlusion, "batched_per_image_s": batched,
                "worker_rss_mb": rss, "master_rss_mb": _rss_mb(api.pid)}  # fmt: skip
    finally:
        if api is not None:
            _stop(api)
        _stop(serving)


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak mark starts again from the current RSS


def _one_bit_bomb() -> bytes:
    """About 12 KB of PNG that decodes to 6300x6300 one-bit pixels (39.7 MP, under the 40 MP limit)."""
    import io

    from PIL import Image

    image = Image.new("1", (6300, 6300), 0)
    image.paste(1, (1000, 1000, 5300, 5300))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _multipart(images: list[bytes]) -> tuple[bytes, str]:
    boundary = "glimpse-bench-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="i{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
        for i, data in enumerate(images)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _start_serving(name: str, model_base: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port), "--rest_api_port", "0", "--model_name", name,
         "--model_base_path", str(model_base)],
        cwd=_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _available(address: str, name: str) -> bool:
    """Asked on a fresh channel, so that the probe itself never waits on a reconnect backoff."""
    from glimpse_wire.client import ClientConfig, ServingClient

    try:
        with ServingClient(ClientConfig(address=address, timeout_s=0.5, retries=0)) as client:
            return any(s.available for s in client.status(name, timeout_s=0.5))
    except Exception:
        return False


def measure_limits(model_base: Path, name: str, *, quick: bool) -> dict[str, Any]:
    """The memory and recovery figures of one gunicorn worker in front of `glimpse serve` (see the module doc)."""
    from concurrent import futures

    grpc_port, http_port = _free_port(), _free_port()
    address = f"127.0.0.1:{grpc_port}"
    serving = _start_serving(name, model_base, grpc_port)
    api = None
    out: dict[str, Any] = {}
    try:
        _wait(lambda: _available(address, name), 600, "glimpse serve", serving)
        base = f"http://127.0.0.1:{http_port}"
        api = subprocess.Popen(
            [sys.executable, "-m", "explain_api", "--host", "127.0.0.1", "--port", str(http_port),
             "--serving-address", address, "--default-model", name, "--timeout", "120"],
            cwd=_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(lambda: _request(base + "/healthz", timeout=2)[0] == 200 and bool(_children(api.pid)), 60, "api", api)
        worker = _children(api.pid)[0]
        url = f"{base}/v1/models/{name}:explain"
        photo = _photo_png()

        def gradcam(_: int = 0) -> int:
            return _request(url + "?method=gradcam&heatmap_size=14", photo, "image/png")[0]

        warm_n, steady_n = (20, 200) if quick else (100, 2000)
        with futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(gradcam, range(warm_n)))
        warm = _rss_mb(worker)
        body, content_type = _multipart([_one_bit_bomb()] * 3)
        _reset_peak(worker)
        status, _ = _request(url, body, content_type)
        out["single_status"], out["single_peak_mb"] = status, _peak_mb(worker)
        _reset_peak(worker)
        with futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: _request(url, body, content_type)[0], range(8)))
        out["concurrent_peak_mb"], out["concurrent_statuses"] = _peak_mb(worker), sorted(statuses)
        for _ in range(10):
            gradcam()
        out["warm_mb"], out["after_mb"] = warm, _rss_mb(worker)
        # steady state: a fresh warm-up level, then steady_n Grad-CAM requests from 8 clients, RSS sampled
        with futures.ThreadPoolExecutor(8) as pool:
            codes += list(pool.map(gradcam, range(warm_n)))
        start_rss, samples = _rss_mb(worker), []
        with futures.ThreadPoolExecutor(8) as pool:
            for chunk in range(0, steady_n, 100):
                codes += list(pool.map(gradcam, range(chunk, min(steady_n, chunk + 100))))
                samples.append(_rss_mb(worker))
        out.update(steady_start_mb=start_rss, steady_max_mb=max(samples), steady_end_mb=samples[-1],
                   steady_requests=steady_n, steady_errors=sum(code != 200 for code in codes))  # fmt: skip
        # recovery after kill -9 and a restart on the same port, requests arriving all through the outage
        restarts, explain_s, ready_s = (2 if quick else 5), [], []
        for _ in range(restarts):
            serving.kill()
            serving.wait(timeout=30)
            for _ in range(4):  # the API's channel sees the outage
                gradcam()
                time.sleep(0.25)
            serving = _start_serving(name, model_base, grpc_port)
            _wait(lambda: _available(address, name), 600, "glimpse serve", serving)
            available = time.perf_counter()
            _wait(lambda: gradcam() == 200, 60, "explain after the restart", api)
            explain_s.append(time.perf_counter() - available)
            _wait(lambda: _request(base + "/readyz", timeout=5)[0] == 200, 60, "readyz after the restart", api)
            ready_s.append(time.perf_counter() - available)
        out.update(recovery_explain_s=max(explain_s), recovery_ready_s=max(ready_s), restarts=restarts)
        return out
    finally:
        if api is not None:
            _stop(api)
        _stop(serving)


def limit_rows(ours: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``measure_limits``' figures, each against its goal."""
    growth = (ours["steady_end_mb"] - ours["steady_start_mb"]) / ours["steady_start_mb"]
    back = (ours["after_mb"] - ours["warm_mb"]) / ours["warm_mb"]
    return [
        {
            "name": "worker peak RSS, worst single request (3 x 6300x6300 1-bit PNG, 119 MP)",
            "ours": f"{ours['single_peak_mb']:.0f} MB",
            "note": f"HTTP {ours['single_status']}; goal <= 300 MB (was 1.4-1.5 GB)",
        },
        {
            "name": "worker peak RSS, 8 such requests at once",
            "ours": f"{ours['concurrent_peak_mb']:.0f} MB",
            "note": f"statuses {ours['concurrent_statuses']} (503 = memory budget full, with Retry-After); "
            "goal <= 600 MB",
        },
        {
            "name": "worker RSS after them vs warmed",
            "ours": f"{back * 100:+.0f}%",
            "note": f"{ours['warm_mb']:.0f} -> {ours['after_mb']:.0f} MB; goal within 15%",
        },
        {
            "name": f"steady-state worker RSS over {ours['steady_requests']} Grad-CAM requests (8 clients)",
            "ours": f"{ours['steady_max_mb']:.0f} MB",
            "note": f"{ours['steady_start_mb']:.0f} -> {ours['steady_end_mb']:.0f} MB after warm-up, growth "
            f"{growth * 100:+.1f}%, {ours['steady_errors']} errors; goal <= 150 MB, growth <= 10%",
        },
        {
            "name": "recovery after the model server restarts (AVAILABLE -> explain 200)",
            "ours_s": ours["recovery_explain_s"],
            "note": f"worst of {ours['restarts']} kill -9 + restarts; /readyz 200 after "
            f"{ours['recovery_ready_s']:.2f} s; goal <= 2 s",
        },
    ]


def run_api_benchmarks(quick: bool = False) -> list[dict[str, Any]]:
    """Rows ``{name, ours_s, baseline_s, ratio, note}`` for ``glimpse bench``."""
    reps = 3 if quick else 10
    with tempfile.TemporaryDirectory(prefix="glimpse-bench-api-") as tmp:
        base = _tf_side(Path(tmp), reps)
        version_dir = Path(base["version_dir"])
        ours = measure_api(version_dir.parent, version_dir.parent.name, reps=reps)
        limits = measure_limits(version_dir.parent, version_dir.parent.name, quick=quick)
    model = f"MobileNetV2 {_SIZE}x{_SIZE}, batch 1"
    return [
        {
            "name": "Grad-CAM per image: HTTP -> gRPC -> in-graph vs tf-explain in-process",
            "ours_s": ours["gradcam_s"],
            "baseline_s": base["gradcam_s"],
            "ratio": ours["gradcam_s"] / base["gradcam_s"],
            "note": f"{model}; goal <= 0.15x",
        },
        {
            "name": f"occlusion per image (patch {_PATCH}): API vs tf-explain OcclusionSensitivity",
            "ours_s": ours["occlusion_s"],
            "baseline_s": base["occlusion_s"],
            "ratio": ours["occlusion_s"] / base["occlusion_s"],
            "note": model,
        },
        {
            "name": f"Grad-CAM per image: batched request of {_BATCH} vs single requests",
            "ours_s": ours["batched_per_image_s"],
            "baseline_s": ours["gradcam_s"],
            "ratio": ours["batched_per_image_s"] / ours["gradcam_s"],
            "note": "one gRPC call for the whole batch",
        },
        {
            "name": "API cold start (spawn to /healthz 200)",
            "ours_s": ours["cold_start_s"],
            "baseline_s": None,
            "ratio": None,
            "note": f"worker RSS {ours['worker_rss_mb']:.0f} MB (goal <= 150 MB), "
            f"gunicorn master {ours['master_rss_mb']:.0f} MB",
        },
        *limit_rows(limits),
    ]


if __name__ == "__main__":
    for row in run_api_benchmarks(quick="--quick" in sys.argv):
        print(row)
