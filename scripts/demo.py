"""`make demo`: train on offline photos, export, serve with `glimpse serve`, start the explain API, show the way.

Steps (each prints what it runs):
1. train EfficientNet-Lite0 (ImageNet weights, offline) on the Tux Paint photos and export it to models/tuxpaint/<v>
   (skipped when a version exists; GLIMPSE_DEMO_RETRAIN=1 trains again);
2. start `glimpse up` (serve on :8500/:8501 + explain API on :8080) in the background, logs in out/stack.log;
3. ask the API for a Grad-CAM explanation of a held-out photo and write out/demo_gradcam.png (and the grid);
4. print the page's URL, the What-If Tool commands and how to stop (`make stop`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = ROOT / "models"
OUT = ROOT / "out"
NAME = "tuxpaint"
GRPC_PORT = int(os.environ.get("GLIMPSE_GRPC_PORT", "8500"))
REST_PORT = int(os.environ.get("GLIMPSE_REST_PORT", "8501"))
API_PORT = int(os.environ.get("GLIMPSE_API_PORT", "8080"))
PIDFILE = OUT / "stack.pid"


def _run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _versions() -> list[int]:
    base = MODELS / NAME
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit()) if base.is_dir() else []


def _stop_previous() -> None:
    if PIDFILE.exists():
        try:
            os.killpg(int(PIDFILE.read_text().strip()), signal.SIGTERM)
            time.sleep(2)
        except (ProcessLookupError, ValueError, PermissionError):
            pass
        PIDFILE.unlink(missing_ok=True)


def _wait_ready(url: str, timeout_s: float, log_start: int = 0) -> None:
    """Wait for ``url`` to answer 200, saying every few seconds what the stack's log last reported."""
    started = time.monotonic()
    deadline = started + timeout_s
    next_report = started + 5
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    print(f"the stack is ready after {time.monotonic() - started:.0f} s", flush=True)
                    return
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        if time.monotonic() >= next_report:
            print(f"waiting for the model to load and warm up ({time.monotonic() - started:.0f} s): "
                  f"{_last_log_line(log_start) or 'starting'}", flush=True)
            next_report = time.monotonic() + 5
        time.sleep(0.5)
    raise SystemExit(f"the stack did not become ready at {url} within {timeout_s:.0f} s ({last}); see {OUT}/stack.log")


def _last_log_line(start: int = 0) -> str:
    """The last `glimpse up:` progress line this run wrote to the stack's log (from byte ``start``), if any."""
    try:
        with open(OUT / "stack.log", "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    progress = [line for line in lines if line.startswith("glimpse up: ")]
    return progress[-1].removeprefix("glimpse up: ") if progress else ""


def _explain(photo: Path, fmt: str, out: Path) -> None:
    url = f"http://127.0.0.1:{API_PORT}/v1/models/{NAME}:explain?method=gradcam&format={fmt}"
    req = urllib.request.Request(url, data=photo.read_bytes(), headers={"Content-Type": "image/png",
                                                                           "Accept": "image/png"})
    with urllib.request.urlopen(req, timeout=60) as r:
        out.write_bytes(r.read())
    print(f"wrote {out.relative_to(ROOT)}")


def main() -> int:
    OUT.mkdir(exist_ok=True)
    found = _versions()
    if found and os.environ.get("GLIMPSE_DEMO_RETRAIN") != "1":
        print(f"found trained version(s) {found} in {(MODELS / NAME).relative_to(ROOT)}: skipping training "
              "(GLIMPSE_DEMO_RETRAIN=1 make demo trains and exports a new version)", flush=True)
    else:
        _run([str(BIN / "glimpse"), "train", "--dataset", "tuxpaint", "--model", "efficientnet_lite0",
              "--image-size", "160", "--epochs", "12", "--unfreeze", "0.0", "--seed", "42",
              "--export-dir", str(MODELS), "--name", NAME, "--logdir", str(ROOT / "runs")])
    print(f"model versions in {MODELS / NAME}: {_versions()}")

    _stop_previous()
    log = open(OUT / "stack.log", "ab")  # noqa: SIM115 - handed to the background process
    log_start = log.tell()
    cmd = [str(BIN / "glimpse"), "up", "--model_name", NAME, "--model_base_path", str(MODELS / NAME),
           "--port", str(GRPC_PORT), "--rest_api_port", str(REST_PORT), "--api-port", str(API_PORT)]
    print("$", " ".join(cmd), f"(background, log in {OUT.relative_to(ROOT)}/stack.log)", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    PIDFILE.write_text(str(proc.pid))
    _wait_ready(f"http://127.0.0.1:{API_PORT}/readyz", timeout_s=180, log_start=log_start)

    photo = next(Path("/usr/share/tuxpaint/stamps/animals/mammals").rglob("*.png"))
    _explain(photo, "png", OUT / "demo_gradcam.png")
    _explain(photo, "grid", OUT / "demo_gradcam_grid.png")
    with urllib.request.urlopen(f"http://127.0.0.1:{API_PORT}/v1/models/{NAME}", timeout=10) as r:
        info = json.load(r)
    examples = MODELS / NAME / "examples" / "test.tfrecord"
    print(f"""
Glimpse is running (stop it with `make stop`):
  web page        http://localhost:{API_PORT}/
  explain API     POST http://localhost:{API_PORT}/v1/models/{NAME}:explain   (docs/api.md)
  metrics         http://localhost:{API_PORT}/metrics   and http://localhost:{REST_PORT}/monitoring/prometheus/metrics
  TF Serving API  gRPC localhost:{GRPC_PORT}, REST http://localhost:{REST_PORT}/v1/models/{NAME}
  model           {NAME} versions {info.get('versions')} methods {info.get('methods')}
  example         {OUT.relative_to(ROOT)}/demo_gradcam.png, {OUT.relative_to(ROOT)}/demo_gradcam_grid.png

What-If Tool:
  .venv/bin/glimpse wit --serving-address localhost:{GRPC_PORT} --model {NAME} --examples {examples} --out out/wit.ipynb
  .venv/bin/glimpse report --serving-address localhost:{GRPC_PORT} --model {NAME} --examples {examples} --out out/report
""")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
