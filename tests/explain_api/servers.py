"""Real processes for the explain API tests: a `glimpse serve` with the session's exported model, and `glimpse api`
under gunicorn in front of it; plus what the tests read from them (the worker's resident memory, its peak).

The session fixtures that start them (``served``, ``live_api``) are in ``conftest.py``; tests that restart the model
server use ``start_serving`` / ``wait_available`` / ``stop`` themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from glimpse_wire.client import ClientConfig, ServingClient

__all__ = [
    "LABEL",
    "LiveApi",
    "Served",
    "model_config",
    "peak_rss_mb",
    "reset_peak_rss",
    "rss_mb",
    "start_api",
    "start_serving",
    "stop",
    "wait_available",
    "worker_pid",
]

ROOT = Path(__file__).resolve().parents[2]
LABEL = "stable"
START_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Served:
    address: str
    name: str
    version: int
    class_names: tuple[str, ...]
    config_file: Path
    port: int


def model_config(name: str, base: Path, version: int) -> str:
    return (
        "model_config_list {\n"
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{base}"\n'
        '    model_platform: "tensorflow"\n'
        f'    version_labels {{ key: "{LABEL}" value: {version} }}\n'
        "  }\n"
        "}\n"
    )


def start_serving(config_file: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "serving", "--port", str(port), "--rest_api_port", "0",
           "--model_config_file", str(config_file), "--allow_version_labels_for_unavailable_models=true"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    with log.open("a") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_available(address: str, name: str, proc: subprocess.Popen, log: Path) -> None:
    with ServingClient(ClientConfig(address=address, timeout_s=5.0)) as client:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"glimpse serve exited:\n{log.read_text()[-4000:]}"
            try:
                client.wait_until_available(name, timeout_s=5.0)
                return
            except Exception as e:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{name} not AVAILABLE in {START_TIMEOUT_S}s:\n{log.read_text()[-4000:]}"
                    ) from e


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------- glimpse api (gunicorn)


@dataclass(frozen=True)
class LiveApi:
    """A running ``glimpse api`` (gunicorn master ``proc``, one gthread worker) at ``base`` (http://host:port)."""

    proc: subprocess.Popen
    base: str
    port: int
    log: Path

    @property
    def worker(self) -> int:
        return worker_pid(self.proc.pid)


def start_api(serving_address: str, model: str, port: int, log: Path, *extra: str, env: dict | None = None) -> LiveApi:
    """Start ``python -m explain_api`` (what ``glimpse api`` runs) and wait until /healthz answers."""
    cmd = [sys.executable, "-m", "explain_api", "--host", "127.0.0.1", "--port", str(port),
           "--serving-address", serving_address, "--default-model", model, *extra]  # fmt: skip
    full_env = {**os.environ, "GLIMPSE_API_KEYS": "", **(env or {})}
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"glimpse api exited:\n{log.read_text()[-4000:]}"
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                if r.status == 200 and worker_pid(proc.pid):
                    return LiveApi(proc, base, port, log)
        except (OSError, urllib.error.URLError):
            pass
        assert time.monotonic() < deadline, f"glimpse api did not come up:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def worker_pid(master: int) -> int:
    """The pid of the gunicorn worker of ``master`` (0 while there is none)."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return 0
    return int(children[0]) if children else 0


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` now, in MiB."""
    return _status_kb(pid, "VmRSS") / 1024.0


def peak_rss_mb(pid: int) -> float:
    """The highest resident memory of ``pid`` since it started or since ``reset_peak_rss``, in MiB."""
    return _status_kb(pid, "VmHWM") / 1024.0


def reset_peak_rss(pid: int) -> None:
    """Reset the kernel's peak-RSS mark of ``pid`` to its current RSS (``/proc/<pid>/clear_refs`` = 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
