"""The explain API after the model server restarts: a real `glimpse serve` killed with SIGKILL and started again on
the same port, 20 times, behind a real `glimpse api` (gunicorn) that keeps getting requests through the outage.
Each time, the API answers an explanation with 200, and /readyz with 200, within 2 s of the moment the restarted
server reports the model AVAILABLE (seen by a fresh client): its channel must not wait out gRPC's reconnect
backoff."""

from __future__ import annotations

import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from glimpse_wire.client import ClientConfig, ServingClient
from glimpse_wire.contract import DEFAULT_EXPLAIN_METHOD, SIG_CLASSIFY, explain_signature
from glimpse_wire.examples import read_tfrecord, write_tfrecord
from glimpse_wire.messages import PredictionLog
from tests.conftest import _free_port
from tests.explain_api.servers import model_config, start_api, start_serving, stop

pytestmark = [pytest.mark.slow, pytest.mark.integration]

RESTARTS = int(os.environ.get("GLIMPSE_TEST_RESTARTS", "20"))  # fewer for a quick look
RECOVERY_S = 2.0


def _keep_warmup(path: Path, signatures: set[str]) -> None:
    """Keep the warm-up records of ``signatures`` only."""
    kept = []
    for record in read_tfrecord(path):
        log = PredictionLog.FromString(record)
        request = getattr(log, log.WhichOneof("log_type")).request
        if request.model_spec.signature_name in signatures:
            kept.append(record)
    assert len(kept) == len(signatures)
    write_tfrecord(path, kept)


def _available_now(address: str, name: str) -> bool:
    """A fresh channel each time, so that this probe never waits on a backoff of its own."""
    try:
        with ServingClient(ClientConfig(address=address, timeout_s=0.5, retries=0)) as client:
            return any(s.available for s in client.status(name, timeout_s=0.5))
    except Exception:
        return False


def _status(url: str, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        request.add_header("Content-Type", "image/jpeg")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        e.close()
        return e.code
    except OSError:
        return 0


class _Traffic:
    """Requests through the API all the time, as users keep sending during an outage: one client sends explanations,
    another asks /readyz, each recording (time answered, status)."""

    def __init__(self, base: str, name: str, photo: bytes) -> None:
        self.records: tuple[list[tuple[float, int]], list[tuple[float, int]]] = ([], [])
        self._stop = threading.Event()
        explain = f"{base}/v1/models/{name}:explain?heatmap_size=4"
        self._threads = [
            threading.Thread(target=self._run, args=(0, lambda: _status(explain, photo)), daemon=True),
            threading.Thread(target=self._run, args=(1, lambda: _status(f"{base}/readyz")), daemon=True),
        ]

    def _run(self, index: int, call) -> None:
        while not self._stop.is_set():
            status = call()
            self.records[index].append((time.monotonic(), status))
            time.sleep(0.02)

    def __enter__(self) -> _Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def first_ok_after(self, t0: float, index: int) -> float | None:
        """Seconds from ``t0`` to the first 200 answered after it (0: explain, 1: readyz)."""
        for t, status in list(self.records[index]):
            if t >= t0 and status == 200:
                return t - t0
        return None


def test_explain_and_readyz_recover_within_2s_of_every_restart(
    exported_model, chelsea_jpeg: bytes, tmp_path: Path
) -> None:
    name = exported_model.name
    version = int(Path(exported_model.version_dir).name)
    # A copy that warms up only what the API calls here: each restart then costs the server's start-up and two
    # warm-up runs, not thirteen; the server is AVAILABLE with those signatures warm, as in production.
    copy = tmp_path / "models" / name / str(version)
    shutil.copytree(exported_model.version_dir, copy)
    # The explain requests name no method: the model's default method is what they run.
    _keep_warmup(copy / "assets.extra" / "tf_serving_warmup_requests",
                 {SIG_CLASSIFY, explain_signature(DEFAULT_EXPLAIN_METHOD)})
    config_file = tmp_path / "models.config"
    config_file.write_text(model_config(name, copy.parent, version))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    log = tmp_path / "serving.log"
    serving = start_serving(config_file, port, log)
    api = start_api(address, name, _free_port(), tmp_path / "api.log", "--timeout", "10")
    recoveries: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 240
        while not _available_now(address, name):
            assert serving.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        with _Traffic(api.base, name, chelsea_jpeg) as traffic:
            for _ in range(RESTARTS):
                serving.kill()  # SIGKILL: no goodbye to the clients
                serving.wait(timeout=30)
                time.sleep(1.0)  # requests fail meanwhile: the API's channel backs off
                serving = start_serving(config_file, port, log)
                deadline = time.monotonic() + 240
                while not _available_now(address, name):
                    assert serving.poll() is None, log.read_text()[-3000:]
                    assert time.monotonic() < deadline, "did not come back:\n" + log.read_text()[-3000:]
                    time.sleep(0.02)
                available = time.monotonic()
                wait_until = available + 10
                while time.monotonic() < wait_until and (
                    traffic.first_ok_after(available, 0) is None or traffic.first_ok_after(available, 1) is None
                ):
                    time.sleep(0.05)
                explain_s, ready_s = traffic.first_ok_after(available, 0), traffic.first_ok_after(available, 1)
                assert explain_s is not None and ready_s is not None, (explain_s, ready_s, recoveries)
                recoveries.append((explain_s, ready_s))
        print("recoveries (explain s, readyz s):", [(round(a, 2), round(b, 2)) for a, b in recoveries])
        assert max(a for a, _ in recoveries) <= RECOVERY_S, recoveries
        assert max(b for _, b in recoveries) <= RECOVERY_S, recoveries
    finally:
        stop(api.proc)
        stop(serving)
