"""``glimpse up``: the whole stack on this machine, or the compose stack on a Docker engine.

Without ``--compose`` it starts ``python -m serving`` (``glimpse serve``: gRPC + REST, Prometheus metrics on) and
``python -m explain_api`` (``glimpse api``) as child processes, waits until the model is AVAILABLE (REST status)
and the API's ``/readyz`` answers 200, prints the URLs, and forwards SIGINT/SIGTERM to both children. Serving flags
are spelled as ``tensorflow_model_server``'s (``--port``, ``--rest_api_port``, ``--model_name``, ...), the API's as
``glimpse api``'s (``--api-port``, ``--default-model``, ...).

With ``--compose [--cpu]`` it runs ``docker compose up`` on ``docker-compose.yml`` (plus ``docker-compose.cpu.yml``)
through the docker CLI when a Docker engine is reachable, and otherwise exits 2 saying so.

Nothing here imports TensorFlow: the children do.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glimpse_wire.booleans import bool_arg

__all__ = [
    "COMPOSE_FILE",
    "COMPOSE_CPU_FILE",
    "MONITORING_PATH",
    "UpError",
    "UpConfig",
    "ComposeConfig",
    "configure_up",
    "run_up",
    "config_from_args",
    "compose_config_from_args",
    "model_names",
    "missing_base_paths",
    "version_states",
    "serve_command",
    "api_command",
    "monitoring_config_text",
    "engine_error",
    "find_compose_cli",
    "compose_command",
    "no_engine_message",
    "run_compose",
    "run_embedded",
]

COMPOSE_FILE = "docker-compose.yml"
COMPOSE_CPU_FILE = "docker-compose.cpu.yml"
MONITORING_PATH = "/monitoring/prometheus/metrics"

_POLL_S = 0.5
_PROGRESS_EVERY_S = 5.0
_HTTP_TIMEOUT_S = 2.0
_STOP_GRACE_S = 40.0  # gunicorn's graceful timeout (20 s) and serving's (10 s) fit in it
_DOCKER_TIMEOUT_S = 15.0


class UpError(Exception):
    """Bad flags, a child that exited early, a stack that did not become ready in time, no Docker engine."""


# ---------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class UpConfig:
    """The embedded stack: one ``glimpse serve`` and one ``glimpse api``."""

    model_name: str = ""
    model_base_path: str = ""
    model_config_file: str = ""
    grpc_port: int = 8500
    rest_port: int = 8501
    bind_address: str = "0.0.0.0"
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    file_system_poll_wait_seconds: int = 1
    api_host: str = "0.0.0.0"
    api_port: int = 8080
    default_model: str = ""
    api_workers: int = 1
    api_threads: int = 8
    ready_timeout_s: float = 300.0
    python: str = field(default_factory=lambda: sys.executable)

    def __post_init__(self) -> None:
        if not self.model_config_file and not self.model_base_path:
            raise UpError("give --model_base_path (one model) or --model_config_file (several)")
        for flag, port in (("--port", self.grpc_port), ("--rest_api_port", self.rest_port),
                           ("--api-port", self.api_port)):
            if not 1 <= port <= 65535:
                raise UpError(f"{flag} must be a TCP port (1-65535), got {port}")
        if len({self.grpc_port, self.rest_port, self.api_port}) != 3:
            raise UpError(f"--port, --rest_api_port and --api-port must differ, got {self.grpc_port}, "
                          f"{self.rest_port}, {self.api_port}")
        if not self.ready_timeout_s > 0:
            raise UpError(f"--ready-timeout must be positive, got {self.ready_timeout_s}")
        if self.api_workers < 1 or self.api_threads < 1:
            raise UpError("--api-workers and --api-threads must be at least 1")
        if self.file_system_poll_wait_seconds < 0:
            raise UpError("--file_system_poll_wait_seconds must be >= 0")
        if not self.default_model and self.model_name and not self.model_config_file:
            object.__setattr__(self, "default_model", self.model_name)
        if not self.default_model:
            raise UpError("no model to wait for: give --default-model")

    @property
    def serving_address(self) -> str:
        """Where the API reaches serving: loopback unless serving listens on one address only."""
        host = self.bind_address if self.bind_address not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"[{host}]:{self.grpc_port}" if ":" in host else f"{host}:{self.grpc_port}"


@dataclass(frozen=True)
class ComposeConfig:
    """``docker compose ... up`` on the project's compose files."""

    project_dir: Path
    cpu: bool = False
    detach: bool = False
    build: bool = False
    profiles: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        return (COMPOSE_FILE, COMPOSE_CPU_FILE) if self.cpu else (COMPOSE_FILE,)


def configure_up(parser: argparse.ArgumentParser) -> None:
    """Flags of ``glimpse up`` (imports nothing heavy)."""
    serve = parser.add_argument_group("model server (tensorflow_model_server's flags, passed to `glimpse serve`)")
    serve.add_argument("--model_name", default="",
                       help="name of the model (default: the last directory of --model_base_path)")
    serve.add_argument("--model_base_path", default="", help="directory holding the model's integer versions")
    serve.add_argument("--model_config_file", default="", help="a text ModelServerConfig with several models")
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    serve.add_argument("--rest_api_port", type=int, default=8501, help="REST and metrics port (default 8501)")
    serve.add_argument("--bind_address", default="0.0.0.0", help="address serving listens on (default 0.0.0.0)")
    serve.add_argument("--enable_batching", type=bool_arg, nargs="?", const=True, default=False, metavar="BOOL",
                       help="merge concurrent requests into batches")
    serve.add_argument("--batching_parameters_file", default="", help="a text BatchingParameters file")
    serve.add_argument("--monitoring_config_file", default="",
                       help=f"a text MonitoringConfig (default: Prometheus metrics at {MONITORING_PATH})")
    serve.add_argument("--file_system_poll_wait_seconds", type=int, default=1,
                       help="poll the base paths for new versions every N seconds (default 1)")
    api = parser.add_argument_group("explain API (`glimpse api`)")
    api.add_argument("--api-host", default="0.0.0.0", help="interface the API listens on (default 0.0.0.0)")
    api.add_argument("--api-port", type=int, default=8080, help="API port (default 8080)")
    api.add_argument("--default-model", default="", metavar="NAME",
                     help="model used by /readyz and the page (default: the served model, or the first in the "
                          "config file)")
    api.add_argument("--api-workers", type=int, default=1, help="gunicorn workers (default 1)")
    api.add_argument("--api-threads", type=int, default=8, help="threads per worker (default 8)")
    parser.add_argument("--ready-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long to wait for the model and the API to be ready (default 300)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    compose = parser.add_argument_group("compose (a Docker engine instead of this machine's processes)")
    compose.add_argument("--compose", action="store_true",
                         help="run docker-compose.yml (TF Serving GPU image, explain API, Prometheus) instead")
    compose.add_argument("--cpu", action="store_true", help="with --compose: add docker-compose.cpu.yml (no GPU)")
    compose.add_argument("--project-dir", default="", metavar="DIR",
                         help="with --compose: the directory holding docker-compose.yml (default: the current one, "
                              "else the Glimpse checkout)")
    compose.add_argument("--detach", "-d", action="store_true", help="with --compose: run in the background")
    compose.add_argument("--build", action="store_true", help="with --compose: build the images first")
    compose.add_argument("--profile", action="append", default=[], metavar="NAME",
                         help="with --compose: also start a profile's services (grafana, train); repeatable")


def _read_model_config(config_file: str | Path) -> list[tuple[str, str]]:
    """(name, base_path) of each model in a text ModelServerConfig (the wire package's message, no TensorFlow)."""
    from google.protobuf import text_format

    from glimpse_wire.messages import ModelServerConfig

    path = Path(config_file)
    try:
        text = path.read_text()
    except OSError as e:
        raise UpError(f"cannot read --model_config_file {path}: {e.strerror or e}") from e
    message = ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise UpError(f"--model_config_file {path} is not a text ModelServerConfig: {e}") from e
    models = [(c.name, c.base_path) for c in message.model_config_list.config]
    if not models:
        raise UpError(f"--model_config_file {path} lists no model (model_config_list {{ config {{ ... }} }})")
    return models


def model_names(config_file: str | Path) -> list[str]:
    """The model names of a text ModelServerConfig file."""
    return [name for name, _ in _read_model_config(config_file)]


def missing_base_paths(config_file: str | Path) -> list[tuple[str, str]]:
    """(name, base_path) of the models whose base path is not a directory on this machine.

    TF Serving keeps running with such a model (it polls until the path appears), and so does ``glimpse serve``; a
    config written for containers (``/models/...``) is the usual cause, so ``glimpse up`` says so before it starts.
    """
    return [(name, base) for name, base in _read_model_config(config_file) if not Path(base).is_dir()]


def _warn_missing_base_paths(config_file: str) -> None:
    for name, base in missing_base_paths(config_file):
        print(f"glimpse up: warning: model {name!r}: base_path {base} does not exist on this machine; it will not "
              "be served until it does (a config written for containers? use paths of this machine)",
              file=sys.stderr, flush=True)


def config_from_args(args: argparse.Namespace) -> UpConfig:
    """The embedded stack's config from parsed flags (UpError on what would not run)."""
    model_name, base_path, config_file = args.model_name, args.model_base_path, args.model_config_file
    if config_file:
        if not Path(config_file).is_file():
            raise UpError(f"--model_config_file {config_file} is not a file")
        names = model_names(config_file)
        default_model = args.default_model or names[0]
        if default_model not in names:
            raise UpError(f"--default-model {default_model!r} is not in {config_file} (models: {', '.join(names)})")
        config_file = str(Path(config_file).resolve())
        _warn_missing_base_paths(config_file)
    elif base_path:
        path = Path(base_path)
        if not path.is_dir():
            raise UpError(f"--model_base_path {base_path} is not a directory (expected <base>/<integer version>/)")
        base_path = str(path.resolve())
        model_name = model_name or path.resolve().name
        default_model = args.default_model or model_name
    else:
        raise UpError("give --model_base_path (one model) or --model_config_file (several)")
    if args.batching_parameters_file and not args.enable_batching:
        raise UpError("--batching_parameters_file needs --enable_batching (tensorflow_model_server refuses it alone)")
    for flag, value in (("--batching_parameters_file", args.batching_parameters_file),
                        ("--monitoring_config_file", args.monitoring_config_file)):
        if value and not Path(value).is_file():
            raise UpError(f"{flag} {value} is not a file")
    return UpConfig(
        model_name=model_name,
        model_base_path=base_path,
        model_config_file=config_file,
        grpc_port=args.port,
        rest_port=args.rest_api_port,
        bind_address=args.bind_address,
        enable_batching=bool(args.enable_batching),
        batching_parameters_file=str(Path(args.batching_parameters_file).resolve())
        if args.batching_parameters_file else "",
        monitoring_config_file=str(Path(args.monitoring_config_file).resolve())
        if args.monitoring_config_file else "",
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        api_host=args.api_host,
        api_port=args.api_port,
        default_model=default_model,
        api_workers=args.api_workers,
        api_threads=args.api_threads,
        ready_timeout_s=args.ready_timeout,
    )


def _default_project_dir() -> Path | None:
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (candidate / COMPOSE_FILE).is_file():
            return candidate
    return None


def compose_config_from_args(args: argparse.Namespace) -> ComposeConfig:
    """The compose run's config from parsed flags (UpError when the compose files cannot be found)."""
    if args.project_dir:
        project = Path(args.project_dir).resolve()
    else:
        found = _default_project_dir()
        if found is None:
            raise UpError(f"no {COMPOSE_FILE} in the current directory or the Glimpse checkout: "
                          "give --project-dir")
        project = found
    config = ComposeConfig(project_dir=project, cpu=args.cpu, detach=args.detach, build=args.build,
                           profiles=tuple(args.profile))
    missing = [name for name in config.files if not (project / name).is_file()]
    if missing:
        raise UpError(f"{', '.join(missing)} not found in {project}")
    return config


# ---------------------------------------------------------------------------------------------------------------
# The embedded stack


def monitoring_config_text(path: str = MONITORING_PATH) -> str:
    """A MonitoringConfig that turns on TF Serving's Prometheus metrics on the REST port."""
    return f'prometheus_config {{\n  enable: true\n  path: "{path}"\n}}\n'


def serve_command(config: UpConfig, monitoring_config_file: str) -> list[str]:
    """``python -m serving`` with tensorflow_model_server's flags."""
    cmd = [config.python, "-m", "serving", f"--port={config.grpc_port}", f"--rest_api_port={config.rest_port}",
           f"--bind_address={config.bind_address}",
           f"--file_system_poll_wait_seconds={config.file_system_poll_wait_seconds}"]
    if config.model_config_file:
        cmd.append(f"--model_config_file={config.model_config_file}")
    else:
        cmd += [f"--model_name={config.model_name}", f"--model_base_path={config.model_base_path}"]
    if config.enable_batching:
        cmd.append("--enable_batching=true")
    if config.batching_parameters_file:
        cmd.append(f"--batching_parameters_file={config.batching_parameters_file}")
    if monitoring_config_file:
        cmd.append(f"--monitoring_config_file={monitoring_config_file}")
    return cmd


def api_command(config: UpConfig) -> list[str]:
    """``python -m explain_api`` in front of that server."""
    return [config.python, "-m", "explain_api", "--host", config.api_host, "--port", str(config.api_port),
            "--serving-address", config.serving_address, "--default-model", config.default_model,
            "--workers", str(config.api_workers), "--threads", str(config.api_threads)]


def _local_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _model_available(body: bytes) -> bool:
    try:
        status = json.loads(body)
    except ValueError:
        return False
    versions = status.get("model_version_status", []) if isinstance(status, dict) else []
    return any(isinstance(v, dict) and v.get("state") == "AVAILABLE" for v in versions)


def _wait(what: str, ready: Callable[[], bool], deadline: float, children: dict[str, subprocess.Popen[Any]],
          stop: threading.Event, *, progress: Callable[[], str] | None = None) -> bool:
    """Poll ``ready`` until it holds (True), ``stop`` is set (False), a child exits or the deadline passes (UpError).

    Every ``_PROGRESS_EVERY_S`` seconds a line says what it is waiting for, for how long, and ``progress()`` (e.g.
    the model's version states) if given; once ready, how long it took.
    """
    last = ""
    started = time.monotonic()
    every_s = _PROGRESS_EVERY_S
    next_report = started + every_s
    while not stop.is_set():
        for name, child in children.items():
            code = child.poll()
            if code is not None:
                raise UpError(f"{name} exited with code {code} before {what} was ready")
        try:
            if ready():
                print(f"glimpse up: {what} ready after {time.monotonic() - started:.1f} s", flush=True)
                return True
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            last = f" (last error: {getattr(e, 'reason', e)})"
        now = time.monotonic()
        if now >= deadline:
            raise UpError(f"{what} was not ready in time{last}")
        if now >= next_report:
            detail = _safe_progress(progress)
            print(f"glimpse up: waiting for {what} ({now - started:.0f} s{', ' + detail if detail else ''})",
                  flush=True)
            next_report = now + every_s
        stop.wait(_POLL_S)
    return False


def _safe_progress(progress: Callable[[], str] | None) -> str:
    if progress is None:
        return ""
    try:
        return progress()
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return "the server is loading and warming up the model before it listens"


def version_states(body: bytes) -> str:
    """'version 3 LOADING' (or several, comma-separated) from a REST model status body; '' when it has none."""
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    versions = status.get("model_version_status", []) if isinstance(status, dict) else []
    return ", ".join(f"version {v.get('version')} {v.get('state')}" for v in versions if isinstance(v, dict))


def _stop_children(children: dict[str, subprocess.Popen[Any]], grace_s: float = _STOP_GRACE_S) -> None:
    """SIGTERM to each child still running (the API first), then wait; SIGKILL what outlives the grace period."""
    for child in reversed(list(children.values())):
        if child.poll() is None:
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    for child in children.values():
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)


def _print_urls(config: UpConfig) -> None:
    host = "localhost" if config.api_host in ("0.0.0.0", "::", "") else _local_host(config.api_host)
    api = f"http://{host}:{config.api_port}"
    rest = f"http://localhost:{config.rest_port}"
    print(
        "\nGlimpse is up (Ctrl-C stops it):\n"
        f"  web page        {api}/\n"
        f"  explain API     POST {api}/v1/models/{config.default_model}:explain\n"
        f"  API metrics     {api}/metrics\n"
        f"  TF Serving REST {rest}/v1/models/{config.default_model}\n"
        f"  TF Serving gRPC localhost:{config.grpc_port}\n"
        f"  serving metrics {rest}{MONITORING_PATH}\n",
        flush=True,
    )


def run_embedded(config: UpConfig, *, popen: Callable[..., subprocess.Popen[Any]] = subprocess.Popen,
                 stop: threading.Event | None = None) -> int:
    """Start serving and the API, wait for both to be ready, then until ``stop`` is set or a child exits."""
    stop = stop or threading.Event()
    children: dict[str, subprocess.Popen[Any]] = {}
    workdir = tempfile.mkdtemp(prefix="glimpse-up-")
    try:
        monitoring = config.monitoring_config_file
        if not monitoring:
            monitoring = str(Path(workdir) / "monitoring.config")
            Path(monitoring).write_text(monitoring_config_text())
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        deadline = time.monotonic() + config.ready_timeout_s
        rest = f"http://{_local_host(config.bind_address)}:{config.rest_port}"
        api = f"http://{_local_host(config.api_host)}:{config.api_port}"
        print("$", " ".join(serve_command(config, monitoring)), flush=True)
        children["glimpse serve"] = popen(serve_command(config, monitoring), env=env)
        print("$", " ".join(api_command(config)), flush=True)
        children["glimpse api"] = popen(api_command(config), env=env)

        def model_ready() -> bool:
            code, body = _http_get(f"{rest}/v1/models/{config.default_model}")
            return code == 200 and _model_available(body)

        def api_ready() -> bool:
            return _http_get(f"{api}/readyz")[0] == 200

        def model_progress() -> str:
            code, body = _http_get(f"{rest}/v1/models/{config.default_model}")
            return version_states(body) if code == 200 else "no version loaded yet (loading, warm-up)"

        print(f"glimpse up: loading model {config.default_model!r} (restore, warm-up requests), then the API",
              flush=True)
        if not _wait(f"model {config.default_model!r}", model_ready, deadline, children, stop,
                     progress=model_progress):
            return 0
        if not _wait("the explain API", api_ready, deadline, children, stop):
            return 0
        _print_urls(config)
        while not stop.wait(_POLL_S):
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    print(f"glimpse up: {name} exited with code {code}; stopping the rest", file=sys.stderr)
                    return 1
        return 0
    finally:
        _stop_children(children)
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Compose


def engine_error(*, which: Callable[[str], str | None] = shutil.which,
                 run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> str | None:
    """None when the docker CLI reaches a Docker engine, else why not (one line)."""
    docker = which("docker")
    if docker is None:
        return "the docker CLI is not installed"
    try:
        result = run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                     timeout=_DOCKER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"`docker info` did not answer within {_DOCKER_TIMEOUT_S:.0f} s"
    except OSError as e:
        return f"cannot run {docker}: {e}"
    if result.returncode == 0 and result.stdout.strip():
        return None
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"`docker info` failed with exit code {result.returncode}"


def find_compose_cli(*, which: Callable[[str], str | None] = shutil.which,
                     run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> list[str] | None:
    """``[docker, compose]`` (the v2 plugin) or ``[docker-compose]``, whichever works; None if neither."""
    docker = which("docker")
    if docker is not None:
        try:
            result = run([docker, "compose", "version"], capture_output=True, text=True,
                         timeout=_DOCKER_TIMEOUT_S, check=False)
            if result.returncode == 0:
                return [docker, "compose"]
        except (subprocess.TimeoutExpired, OSError):
            pass
    legacy = which("docker-compose")
    return [legacy] if legacy is not None else None


def compose_command(config: ComposeConfig, cli: Sequence[str]) -> list[str]:
    """``docker compose --project-directory DIR -f docker-compose.yml [-f docker-compose.cpu.yml] up ...``."""
    cmd = [*cli, "--project-directory", str(config.project_dir)]
    for name in config.files:
        cmd += ["-f", str(config.project_dir / name)]
    for profile in config.profiles:
        cmd += ["--profile", profile]
    cmd.append("up")
    if config.detach:
        cmd.append("--detach")
    if config.build:
        cmd.append("--build")
    return cmd


def no_engine_message(reason: str) -> str:
    """What ``glimpse up --compose`` says when no Docker engine can be reached."""
    return (
        f"glimpse up --compose: no Docker engine is reachable ({reason}).\n"
        "Start Docker or point DOCKER_HOST at an engine, or run `glimpse up` without --compose: it runs the "
        "embedded stack (`glimpse serve` + `glimpse api`) on this machine, no Docker needed."
    )


def run_compose(config: ComposeConfig, *, probe: Callable[[], str | None] = engine_error,
                find_cli: Callable[[], list[str] | None] = find_compose_cli,
                popen: Callable[..., subprocess.Popen[Any]] = subprocess.Popen,
                stop: threading.Event | None = None) -> int:
    """``docker compose up`` when an engine is reachable (its exit code), else 2 with :func:`no_engine_message`."""
    reason = probe()
    if reason is not None:
        print(no_engine_message(reason), file=sys.stderr)
        return 2
    cli = find_cli()
    if cli is None:
        print("glimpse up --compose: a Docker engine is reachable, but neither `docker compose` (the Compose v2 "
              "plugin) nor `docker-compose` is installed.", file=sys.stderr)
        return 2
    cmd = compose_command(config, cli)
    print("$", " ".join(cmd), flush=True)
    child = popen(cmd, cwd=str(config.project_dir))
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            return int(child.wait(timeout=_POLL_S))
        except subprocess.TimeoutExpired:
            continue
    child.send_signal(signal.SIGTERM)  # compose stops the containers it started in the foreground
    try:
        return int(child.wait(timeout=120))
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=10)
        return 1


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def _install_signal_handlers(stop: threading.Event) -> dict[int, Any]:
    def on_signal(signum: int, frame: Any) -> None:
        print(f"\nglimpse up: {signal.Signals(signum).name}, stopping", file=sys.stderr, flush=True)
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}


def run_up(args: argparse.Namespace) -> int:
    """Run the embedded stack (default) or the compose stack (``--compose``) until SIGINT/SIGTERM."""
    try:
        if args.compose:
            compose = compose_config_from_args(args)
            if args.dry_run:
                print(" ".join(compose_command(compose, ["docker", "compose"])))
                return 0
        else:
            config = config_from_args(args)
            if args.dry_run:
                print(" ".join(serve_command(config, config.monitoring_config_file or "<generated>")))
                print(" ".join(api_command(config)))
                return 0
    except UpError as e:
        print(f"glimpse up: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = _install_signal_handlers(stop)
    try:
        if args.compose:
            return run_compose(compose, stop=stop)
        return run_embedded(config, stop=stop)
    except UpError as e:
        print(f"glimpse up: {e}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
