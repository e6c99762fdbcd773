"""``glimpse api`` / ``python -m explain_api``: flags, config precedence, gunicorn settings, no TensorFlow in the
process, and a real gunicorn run that shuts down gracefully with a request in flight."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures
from pathlib import Path

import pytest

from explain_api.cli import config_from_args, configure_api, gunicorn_options, run_api

ROOT = Path(__file__).resolve().parents[2]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_api(parser)
    return parser.parse_args(list(argv))


def test_defaults_and_gunicorn_settings() -> None:
    args = _args()
    config = config_from_args(args, env={})
    assert config.serving_address == "localhost:8500" and config.default_model is None
    options = gunicorn_options(args, config)
    assert options["bind"] == "0.0.0.0:8080" and options["worker_class"] == "gthread"
    assert options["workers"] == 1 and options["threads"] == 8 and options["preload_app"] is False
    assert options["timeout"] > config.timeout_s


def test_flags_win_over_environment() -> None:
    env = {
        "SERVING_ADDRESS": "env:1",
        "GLIMPSE_DEFAULT_MODEL": "envmodel",
        "GLIMPSE_API_KEYS": "a, b",
        "GLIMPSE_MAX_IMAGES": "3",
    }
    config = config_from_args(_args(), env=env)
    assert (config.serving_address, config.default_model, config.api_keys, config.max_images) == (
        "env:1",
        "envmodel",
        ("a", "b"),
        3,
    )
    args = _args(
        "--serving-address",
        "flag:2",
        "--default-model",
        "m",
        "--models",
        "x,y",
        "--timeout",
        "4",
        "--cors-origins",
        "*",
        "--host",
        "::1",
        "--port",
        "9000",
    )
    config = config_from_args(args, env=env)
    assert (config.serving_address, config.default_model, config.models, config.timeout_s) == (
        "flag:2",
        "m",
        ("x", "y"),
        4.0,
    )
    assert config.cors_origins == ("*",) and config.model_names == ("m", "x", "y")
    assert gunicorn_options(args, config)["bind"] == "[::1]:9000"


def test_bad_settings_exit_2_without_starting(capsys) -> None:
    assert run_api(_args("--workers", "0")) == 2
    assert run_api(_args("--max-images", "0")) == 2
    assert "max_images must be >= 1" in capsys.readouterr().out


_NO_TF_SCRIPT = r"""
import sys
from glimpse.cli import main
try:
    main(["api", "--help"])
except SystemExit as e:
    assert e.code == 0, e.code
from explain_api.app import create_app
from explain_api.config import ApiConfig
import explain_api.__main__, explain_api.wsgi, explain_api.video, rendering.video
app = create_app(ApiConfig(serving_address="127.0.0.1:1", default_model="m", readiness_timeout_s=0.5))
client = app.test_client()
assert client.get("/healthz").status_code == 200
assert client.get("/openapi.json").status_code == 200
assert client.get("/readyz").status_code == 503
heavy = sorted(m for m in ("tensorflow", "keras", "tensorflow_serving", "matplotlib", "torch") if m in sys.modules)
print("HEAVY", heavy)
"""


@pytest.mark.slow
@pytest.mark.integration
def test_api_process_never_imports_tensorflow() -> None:
    env = {**os.environ, "SERVING_ADDRESS": "127.0.0.1:1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TF_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--serving-address" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout[-2000:]


# ------------------------------------------------------------------------------------- a real gunicorn process


def _slow_status_server(delay_s: float):
    """A gRPC server answering GetModelStatus (empty: no versions) after ``delay_s`` seconds."""
    import grpc

    def handler(request: bytes, context) -> bytes:
        time.sleep(delay_s)
        return b""  # an empty GetModelStatusResponse

    method = grpc.unary_unary_rpc_method_handler(handler, request_deserializer=None, response_serializer=None)
    generic = grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", {"GetModelStatus": method})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((generic,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _get(url: str, timeout: float = 10.0) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), json.loads(e.read() or b"null")


@pytest.mark.slow
@pytest.mark.integration
def test_gunicorn_serves_and_shuts_down_gracefully(free_port: int, tmp_path: Path) -> None:
    grpc_server, grpc_port = _slow_status_server(delay_s=1.5)
    cmd = [
        sys.executable,
        "-m",
        "explain_api",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port),
        "--serving-address",
        f"127.0.0.1:{grpc_port}",
        "--default-model",
        "tiny",
        "--graceful-timeout",
        "10",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "GLIMPSE_API_KEYS": ""}
    log = tmp_path / "api.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{free_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(base + "/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "API did not come up in 60 s"
            time.sleep(0.2)
        result: dict = {}

        def slow_request() -> None:
            result["answer"] = _get(base + "/readyz", timeout=20)

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.5)  # the request is now waiting on the slow model server
        proc.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        status, headers, body = result["answer"]
        assert status == 503 and "no versions" in body["error"]["message"]  # answered, not cut off
        assert headers["Retry-After"] == "5"
        assert proc.wait(timeout=30) == 0, log.read_text()
        assert "Handling signal: term" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        grpc_server.stop(0)
