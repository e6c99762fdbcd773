"""glimpse/up.py: flags, the commands it starts, readiness, signal forwarding, and `--compose` without an engine.

The children here are small real processes (and a real HTTP server standing in for the REST and /readyz endpoints);
the embedded stack with `glimpse serve` and `glimpse api` end to end is tested with the demo.
"""

from __future__ import annotations

import argparse
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from glimpse import up
from tests.deploy import support as s

CONFIG = """model_config_list {
  config { name: "flowers" base_path: "/models/flowers" model_platform: "tensorflow" }
  config { name: "pets" base_path: "/models/pets" model_platform: "tensorflow" }
}
"""


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="glimpse up")
    up.configure_up(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def base_path(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "tuxpaint"
    (path / "1").mkdir(parents=True)
    return path


# --- flags ------------------------------------------------------------------------------------------------------


def test_one_model_from_its_base_path(base_path: Path) -> None:
    config = up.config_from_args(_parse("--model_base_path", str(base_path)))
    assert (config.model_name, config.default_model) == ("tuxpaint", "tuxpaint")
    serve = up.serve_command(config, "/tmp/m.config")
    assert serve[:3] == [sys.executable, "-m", "serving"]
    assert {"--port=8500", "--rest_api_port=8501", "--model_name=tuxpaint", f"--model_base_path={base_path}",
            "--monitoring_config_file=/tmp/m.config"} <= set(serve)
    assert not any(a.startswith("--enable_batching") for a in serve)
    api = up.api_command(config)
    assert api[:3] == [sys.executable, "-m", "explain_api"]
    assert api[api.index("--serving-address") + 1] == "127.0.0.1:8500"
    assert api[api.index("--default-model") + 1] == "tuxpaint"
    assert api[api.index("--port") + 1] == "8080"


def test_flags_pass_through_with_tf_servings_spelling(base_path: Path, tmp_path: Path) -> None:
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\n")
    config = up.config_from_args(_parse(
        "--model_base_path", str(base_path), "--model_name", "cats", "--port", "9000", "--rest_api_port", "9001",
        "--api-port", "9002", "--enable_batching", "--batching_parameters_file", str(batching),
        "--bind_address", "127.0.0.1", "--api-workers", "2"))
    serve = up.serve_command(config, "")
    assert {"--model_name=cats", "--port=9000", "--rest_api_port=9001", "--enable_batching=true",
            f"--batching_parameters_file={batching}", "--bind_address=127.0.0.1"} <= set(serve)
    assert not any(a.startswith("--monitoring_config_file") for a in serve)
    api = up.api_command(config)
    assert api[api.index("--serving-address") + 1] == "127.0.0.1:9000"
    assert api[api.index("--workers") + 1] == "2" and api[api.index("--default-model") + 1] == "cats"
    assert _parse("--enable_batching=false", "--model_base_path", "x").enable_batching is False


def test_model_config_file_serves_several_models(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(CONFIG)
    assert up.model_names(path) == ["flowers", "pets"]
    config = up.config_from_args(_parse("--model_config_file", str(path)))
    assert config.default_model == "flowers"
    assert f"--model_config_file={path}" in up.serve_command(config, "")
    assert not any(a.startswith("--model_name") for a in up.serve_command(config, ""))
    assert up.config_from_args(_parse("--model_config_file", str(path), "--default-model", "pets")).default_model \
        == "pets"
    with pytest.raises(up.UpError, match="'cats' is not in .* flowers, pets"):
        up.config_from_args(_parse("--model_config_file", str(path), "--default-model", "cats"))


def test_the_projects_own_model_config_parses() -> None:
    assert up.model_names(s.DEPLOY_DIR / "serving" / "models.config") == [s.MODEL_NAME]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "give --model_base_path"),
        (("--model_base_path", "/no/such/dir"), "is not a directory"),
        (("--model_config_file", "/no/such.config"), "is not a file"),
        (("--model_base_path", "{base}", "--port", "8080"), "must differ"),
        (("--model_base_path", "{base}", "--rest_api_port", "0"), "must be a TCP port"),
        (("--model_base_path", "{base}", "--ready-timeout", "0"), "must be positive"),
        (("--model_base_path", "{base}", "--api-threads", "0"), "at least 1"),
        (("--model_base_path", "{base}", "--enable_batching", "--batching_parameters_file", "/no/file"),
         "is not a file"),
        (("--model_base_path", "{base}", "--batching_parameters_file", "/no/file"), "needs --enable_batching"),
        (("--model_config_file", "{bad}"), "is not a text ModelServerConfig"),
        (("--model_config_file", "{empty}"), "lists no model"),
    ],
)
def test_bad_flags_exit_2_with_a_message(argv: tuple[str, ...], message: str, base_path: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad, empty = tmp_path / "bad.config", tmp_path / "empty.config"
    bad.write_text("model_config_list { config { nme: 1 } }")
    empty.write_text("model_config_list { }")
    args = _parse(*(a.format(base=base_path, bad=bad, empty=empty) for a in argv))
    assert up.run_up(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("glimpse up: ") and message in err


def test_base_paths_missing_here_are_named_before_starting(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "models.config"
    path.write_text(CONFIG.replace("/models/pets", str(tmp_path)))
    assert up.missing_base_paths(path) == [("flowers", "/models/flowers")]
    assert up.run_up(_parse("--model_config_file", str(path), "--dry-run")) == 0
    err = capsys.readouterr().err
    assert "model 'flowers': base_path /models/flowers does not exist on this machine" in err
    assert "'pets'" not in err


def test_the_deploy_config_points_at_container_paths_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    config = s.DEPLOY_DIR / "serving" / "models.config"
    assert up.run_up(_parse("--model_config_file", str(config), "--dry-run")) == 0
    assert "does not exist on this machine" in capsys.readouterr().err


def test_a_bad_boolean_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit) as e:
        _parse("--enable_batching=maybe")
    assert e.value.code == 2


def test_dry_run_prints_both_commands(base_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert up.run_up(_parse("--model_base_path", str(base_path), "--dry-run")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and " -m serving " in lines[0] and " -m explain_api " in lines[1]


def test_glimpse_up_help_stays_light() -> None:
    code = ("import sys\nfrom glimpse.cli import main\ntry:\n    main(['up', '--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'grpc', 'numpy') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True,
                            cwd=s.REPO_ROOT)
    assert "--compose" in result.stdout and "HEAVY []" in result.stdout


# --- the embedded stack's lifecycle, with stand-in children ------------------------------------------------------


class _Recorder:
    """A popen that starts ``script`` (a small Python program) for every command and remembers both."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.commands: list[list[str]] = []
        self.children: list[subprocess.Popen[Any]] = []

    def __call__(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        self.commands.append(cmd)
        child = subprocess.Popen([sys.executable, "-c", self.script])
        self.children.append(child)
        return child


def _config(base_path: Path, rest_port: int, api_port: int, **kwargs: Any) -> up.UpConfig:
    return up.UpConfig(model_name="tuxpaint", model_base_path=str(base_path), default_model="tuxpaint",
                       grpc_port=s.free_port(), rest_port=rest_port, api_port=api_port, bind_address="127.0.0.1",
                       api_host="127.0.0.1", **kwargs)


class _Handler(http.server.BaseHTTPRequestHandler):
    state = "AVAILABLE"

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path == "/v1/models/tuxpaint":
            body = json.dumps({"model_version_status": [{"version": "1", "state": self.state}]}).encode()
            self.send_response(200)
        elif self.path == "/readyz":
            body = b'{"ready": true}'
            self.send_response(200)
        else:
            body = b"{}"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def endpoints() -> Iterator[tuple[int, int]]:
    """Two stand-in HTTP servers: the model status (serving's REST port) and /readyz (the API's port)."""
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield servers[0].server_address[1], servers[1].server_address[1]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_waits_for_readiness_prints_urls_and_forwards_the_stop(
    base_path: Path, endpoints: tuple[int, int], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder = _Recorder("import time; time.sleep(30)")
    stop = threading.Event()
    print_urls = up._print_urls

    def printed(config: up.UpConfig) -> None:
        print_urls(config)
        stop.set()  # as SIGINT/SIGTERM would, once the stack is up

    monkeypatch.setattr(up, "_print_urls", printed)
    rest_port, api_port = endpoints
    assert up.run_embedded(_config(base_path, rest_port, api_port), popen=recorder, stop=stop) == 0
    assert [c[2] for c in recorder.commands] == ["serving", "explain_api"]
    assert all(child.returncode == -15 for child in recorder.children)  # SIGTERM forwarded to both
    out = capsys.readouterr().out
    assert "Glimpse is up" in out and f"http://127.0.0.1:{api_port}/" in out
    assert f"http://localhost:{rest_port}/monitoring/prometheus/metrics" in out


def test_a_child_that_exits_early_is_reported(base_path: Path) -> None:
    recorder = _Recorder("raise SystemExit(4)")
    config = _config(base_path, rest_port=s.free_port(), api_port=s.free_port(), ready_timeout_s=20)
    with pytest.raises(up.UpError, match="exited with code 4"):
        up.run_embedded(config, popen=recorder)
    assert all(child.poll() is not None for child in recorder.children)


def test_not_ready_in_time_stops_the_children(base_path: Path, endpoints: tuple[int, int]) -> None:
    _Handler.state = "LOADING"
    try:
        recorder = _Recorder("import time; time.sleep(30)")
        config = _config(base_path, rest_port=endpoints[0], api_port=endpoints[1], ready_timeout_s=0.3)
        with pytest.raises(up.UpError, match="model 'tuxpaint' was not ready in time"):
            up.run_embedded(config, popen=recorder)
        assert all(child.returncode == -15 for child in recorder.children)
    finally:
        _Handler.state = "AVAILABLE"


def test_waiting_says_what_it_waits_for_and_the_version_states(
    base_path: Path, endpoints: tuple[int, int], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(up, "_PROGRESS_EVERY_S", 0.2)
    monkeypatch.setattr(_Handler, "state", "LOADING")
    recorder = _Recorder("import time; time.sleep(30)")
    config = _config(base_path, rest_port=endpoints[0], api_port=endpoints[1], ready_timeout_s=1.5)
    with pytest.raises(up.UpError, match="not ready in time"):
        up.run_embedded(config, popen=recorder)
    out = capsys.readouterr().out
    assert "loading model 'tuxpaint'" in out
    assert "waiting for model 'tuxpaint' (" in out and "version 1 LOADING" in out


def test_readiness_is_reported_with_its_time(
    base_path: Path, endpoints: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    stop = threading.Event()
    threading.Timer(3.0, stop.set).start()
    up.run_embedded(_config(base_path, *endpoints), popen=_Recorder("import time; time.sleep(30)"), stop=stop)
    out = capsys.readouterr().out
    assert re.search(r"model 'tuxpaint' ready after \d+\.\d s", out) and "the explain API ready after" in out


# --- compose ----------------------------------------------------------------------------------------------------


def test_compose_without_an_engine_says_so_and_points_at_the_embedded_stack(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = up.compose_config_from_args(_parse("--compose", "--project-dir", str(s.REPO_ROOT)))
    started: list[Any] = []
    code = up.run_compose(config, probe=lambda: "Cannot connect to the Docker daemon", find_cli=lambda: ["docker"],
                          popen=lambda *a, **k: started.append(a))
    assert code == 2 and started == []
    err = capsys.readouterr().err
    assert "no Docker engine is reachable (Cannot connect to the Docker daemon)" in err
    assert "`glimpse up` without --compose" in err and "embedded stack" in err


def test_compose_with_the_real_docker_cli_and_no_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from glimpse.cli import main

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.chdir(s.REPO_ROOT)
    assert main(["up", "--compose", "--cpu"]) == 2
    err = capsys.readouterr().err
    assert "no Docker engine is reachable" in err and "without --compose" in err
    if shutil.which("docker") is None:
        assert "docker CLI is not installed" in err
    else:
        assert "no-engine.sock" in err  # docker's own reason, passed on


def test_compose_command_and_files(tmp_path: Path) -> None:
    gpu = up.compose_config_from_args(_parse("--compose", "--project-dir", str(s.REPO_ROOT)))
    cmd = up.compose_command(gpu, ["docker", "compose"])
    assert cmd == ["docker", "compose", "--project-directory", str(s.REPO_ROOT), "-f", str(s.COMPOSE), "up"]
    cpu = up.compose_config_from_args(_parse("--compose", "--cpu", "-d", "--build", "--profile", "grafana",
                                             "--project-dir", str(s.REPO_ROOT)))
    cmd = up.compose_command(cpu, ["docker-compose"])
    assert cmd[cmd.index(str(s.COMPOSE)) + 1:] == ["-f", str(s.COMPOSE_CPU), "--profile", "grafana", "up",
                                                    "--detach", "--build"]
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    with pytest.raises(up.UpError, match="docker-compose.cpu.yml not found"):
        up.compose_config_from_args(_parse("--compose", "--cpu", "--project-dir", str(tmp_path)))


def test_compose_runs_the_cli_and_returns_its_exit_code() -> None:
    config = up.ComposeConfig(project_dir=s.REPO_ROOT, cpu=True)
    recorder = _Recorder("raise SystemExit(3)")
    assert up.run_compose(config, probe=lambda: None, find_cli=lambda: ["docker", "compose"], popen=recorder) == 3
    assert recorder.commands[0][:2] == ["docker", "compose"] and recorder.commands[0][-1] == "up"


def test_no_compose_cli_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    config = up.ComposeConfig(project_dir=s.REPO_ROOT)
    assert up.run_compose(config, probe=lambda: None, find_cli=lambda: None) == 2
    assert "neither `docker compose`" in capsys.readouterr().err


def _completed(code: int, out: str = "", err: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], code, out, err)


def test_engine_error_reports_why() -> None:
    assert up.engine_error(which=lambda name: None) == "the docker CLI is not installed"
    assert up.engine_error(which=lambda name: "/bin/docker", run=lambda *a, **k: _completed(0, "28.2.2\n")) is None
    down = _completed(1, "", "Client: ...\nCannot connect to the Docker daemon at unix:///x.sock\n")
    assert up.engine_error(which=lambda name: "/bin/docker", run=lambda *a, **k: down) == \
        "Cannot connect to the Docker daemon at unix:///x.sock"

    def hang(*args: Any, **kwargs: Any) -> Any:
        raise subprocess.TimeoutExpired(args[0], kwargs["timeout"])

    assert "did not answer" in up.engine_error(which=lambda name: "/bin/docker", run=hang)


def test_find_compose_cli_prefers_the_plugin() -> None:
    which = {"docker": "/bin/docker", "docker-compose": "/bin/docker-compose"}.get
    assert up.find_compose_cli(which=which, run=lambda *a, **k: _completed(0)) == ["/bin/docker", "compose"]
    assert up.find_compose_cli(which=which, run=lambda *a, **k: _completed(1)) == ["/bin/docker-compose"]
    assert up.find_compose_cli(which={"docker": "/bin/docker"}.get, run=lambda *a, **k: _completed(1)) is None
