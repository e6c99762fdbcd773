"""docker-compose.yml and docker-compose.cpu.yml: the Compose Specification schema (offline) and the stack's wiring.

The schema is the compose-spec project's JSON schema as vendored by check-jsonschema; the invariants are what the
stack needs to work: GPU reservation, ports, read-only mounts, env wiring, healthchecks, start order. The serving
healthcheck itself is run against a real `glimpse serve` (it is plain bash, the TF Serving image has no curl).
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy import support as s

GRPC, REST, API = 8500, 8501, 8080


def _validator() -> jsonschema.protocols.Validator:
    schema = s.compose_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(document)]


def _flags(command: list[str]) -> dict[str, str]:
    return dict(flag[2:].split("=", 1) for flag in command if flag.startswith("--") and "=" in flag)


def _mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in service.get("volumes", [])}


def _devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


# --- schema ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [s.COMPOSE, s.COMPOSE_CPU], ids=lambda p: p.name)
def test_compose_file_matches_the_compose_specification(path: Path) -> None:
    assert _errors(s.plain(s.load_compose(path))) == []


def test_merged_cpu_model_matches_the_compose_specification(compose_cpu: dict[str, Any]) -> None:
    assert _errors(compose_cpu) == []


def test_schema_rejects_what_compose_would_reject(compose: dict[str, Any]) -> None:
    # The validation is not vacuous: a misspelt key, a wrong type and a bad depends_on condition are all caught.
    broken = copy.deepcopy(compose)
    broken["services"]["serving"]["healthchek"] = {}
    broken["services"]["explain-api"]["ports"] = 8080
    broken["services"]["explain-api"]["depends_on"]["serving"]["condition"] = "service_ready"
    errors = _errors(broken)
    assert any("healthchek" in e for e in errors), errors
    assert any(e.startswith("services/explain-api/ports") for e in errors), errors
    assert any("service_ready" in e for e in errors), errors


# --- serving ----------------------------------------------------------------------------------------------------


def test_serving_is_tf_serving_gpu_with_configs_batching_and_monitoring(compose: dict[str, Any]) -> None:
    serving = compose["services"]["serving"]
    assert serving["image"] == "tensorflow/serving:latest-gpu"
    flags = _flags(serving["command"])
    assert flags["port"] == str(GRPC) and flags["rest_api_port"] == str(REST)
    assert flags["enable_batching"] == "true"
    mounts = _mounts(serving)
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        container_path = Path(flags[flag])
        mount = mounts[str(container_path.parent)]
        host_file = s.host_path(mount["source"]) / container_path.name
        assert host_file.is_file(), f"--{flag}={container_path} is not backed by a file on the host ({host_file})"
        assert mount["read_only"] is True


def test_serving_model_config_points_into_the_read_only_models_mount(compose: dict[str, Any]) -> None:
    from serving.config import load_model_server_config

    serving = compose["services"]["serving"]
    models = next(v for v in serving["volumes"] if v["target"] == "/models")
    assert models["type"] == "bind" and models["read_only"] is True
    config = load_model_server_config(s.DEPLOY_DIR / "serving" / "models.config")
    names = [c.name for c in config.model_config_list.config]
    assert names == [s.MODEL_NAME]
    for c in config.model_config_list.config:
        assert c.base_path == f"/models/{c.name}" and c.model_platform == "tensorflow"
    assert serving["environment"]["MODEL_NAME"] == s.MODEL_NAME


def test_every_bind_mount_of_serving_grafana_and_prometheus_configs_is_read_only(compose: dict[str, Any]) -> None:
    for name in ("serving", "prometheus", "grafana"):
        for mount in compose["services"][name]["volumes"]:
            if mount["type"] == "bind":
                assert mount.get("read_only") is True, (name, mount["target"])
                assert s.host_path(mount["source"]).exists() or mount["source"].endswith("models"), mount


def test_serving_reserves_the_gpu_and_publishes_grpc_and_rest(compose: dict[str, Any]) -> None:
    serving = compose["services"]["serving"]
    devices = _devices(serving)
    assert len(devices) == 1 and "gpu" in devices[0]["capabilities"] and devices[0]["driver"] == "nvidia"
    assert sorted(serving["ports"]) == [f"{GRPC}:{GRPC}", f"{REST}:{REST}"]


def test_serving_healthcheck_needs_only_bash(compose: dict[str, Any]) -> None:
    check = compose["services"]["serving"]["healthcheck"]
    assert check["test"][:3] == ["CMD", "bash", "-c"]
    script = check["test"][3]
    assert "curl" not in script and "wget" not in script
    assert f"/dev/tcp/127.0.0.1/{REST}" in script and "${MODEL_NAME}" in script
    assert check["start_period"] and check["retries"] >= 3


# --- explain API, prometheus, grafana, train -------------------------------------------------------------------


def test_explain_api_is_wired_to_serving_and_waits_for_it_to_be_healthy(compose: dict[str, Any]) -> None:
    api = compose["services"]["explain-api"]
    host, port = api["environment"]["SERVING_ADDRESS"].rsplit(":", 1)
    assert host == "serving" and int(port) == GRPC
    assert api["environment"]["GLIMPSE_DEFAULT_MODEL"] == s.MODEL_NAME
    assert "GLIMPSE_API_KEYS" in api["environment"]
    assert api["depends_on"]["serving"]["condition"] == "service_healthy"
    assert api["ports"] == [f"{API}:{API}"]
    assert (s.REPO_ROOT / api["build"]["context"] / api["build"]["dockerfile"]).is_file()
    assert api["read_only"] is True and "/tmp" in api["tmpfs"]
    assert api["user"].split(":")[0] not in ("0", "root")
    assert api["healthcheck"]["test"][0] == "CMD" and f"127.0.0.1:{API}/" in " ".join(api["healthcheck"]["test"])
    assert _devices(api) == []


def test_prometheus_scrapes_both_services_at_their_metrics_paths(compose: dict[str, Any]) -> None:
    import yaml

    from serving.config import load_monitoring_options

    prometheus = compose["services"]["prometheus"]
    mount = _mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    assert mount["read_only"] is True
    config = yaml.safe_load(s.host_path(mount["source"]).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for job in jobs.values() for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"serving:{REST}", f"explain-api:{API}"}
    serving_job = next(j for j in jobs.values() if f"serving:{REST}" in j["static_configs"][0]["targets"])
    monitoring = load_monitoring_options(s.DEPLOY_DIR / "serving" / "monitoring.config")
    assert monitoring.prometheus_enabled and serving_job["metrics_path"] == monitoring.prometheus_path
    api_job = next(j for j in jobs.values() if f"explain-api:{API}" in j["static_configs"][0]["targets"])
    assert api_job["metrics_path"] == "/metrics"
    for target in targets:
        assert target.split(":")[0] in compose["services"]


def test_grafana_is_optional_and_provisioned_from_the_repo(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert grafana["profiles"] == ["grafana"]
    mounts = _mounts(grafana)
    dashboard = s.host_path(mounts["/var/lib/grafana/dashboards/glimpse-dashboard.json"]["source"])
    assert dashboard == s.DEPLOY_DIR / "grafana" / "glimpse-dashboard.json"
    assert (s.host_path(mounts["/etc/grafana/provisioning"]["source"]) / "datasources" / "prometheus.yml").is_file()


def test_train_runs_under_its_profile_and_writes_into_the_models_volume(compose: dict[str, Any]) -> None:
    train, serving = compose["services"]["train"], compose["services"]["serving"]
    assert train["profiles"] == ["train"]
    train_models = _mounts(train)["/models"]
    serving_models = _mounts(serving)["/models"]
    assert train_models["source"] == serving_models["source"]
    assert train_models.get("read_only") is False
    assert "--export-dir=/models" in train["command"]
    assert f"--name={s.MODEL_NAME}" in train["command"]
    assert (s.REPO_ROOT / train["build"]["context"] / train["build"]["dockerfile"]).is_file()
    assert "gpu" in _devices(train)[0]["capabilities"]
    # Without the profile only these start: training never runs by accident.
    default = {name for name, svc in compose["services"].items() if not svc.get("profiles")}
    assert default == {"serving", "explain-api", "prometheus"}


def test_interpolated_variables_have_defaults() -> None:
    # Every ${VAR} in the compose files carries a default, so `docker compose up` needs no .env file.
    import re

    for path in (s.COMPOSE, s.COMPOSE_CPU):
        text = path.read_text()
        bare = [m for m in re.findall(r"(?<!\$)\$\{([^}]*)\}", text) if ":-" not in m]
        assert bare == [], f"{path.name}: variables without a default: {bare}"


# --- CPU override -----------------------------------------------------------------------------------------------


def test_cpu_override_swaps_the_image_and_drops_every_gpu_reservation(
    compose: dict[str, Any], compose_cpu: dict[str, Any]
) -> None:
    assert compose_cpu["services"]["serving"]["image"] == "tensorflow/serving:latest"
    for name, service in compose_cpu["services"].items():
        assert _devices(service) == [], f"{name} still reserves a device"
    assert compose_cpu["services"]["train"]["build"]["args"]["BASE_IMAGE"].startswith("tensorflow/tensorflow:")
    assert not compose_cpu["services"]["train"]["build"]["args"]["BASE_IMAGE"].endswith("-gpu")
    # Everything else is the GPU stack's.
    for key in ("command", "ports", "volumes", "healthcheck", "environment"):
        assert compose_cpu["services"]["serving"][key] == compose["services"]["serving"][key]
    assert compose_cpu["services"]["explain-api"] == compose["services"]["explain-api"]


def test_cpu_override_uses_reset_tags_on_the_device_lists() -> None:
    override = s.load_compose(s.COMPOSE_CPU)
    for name in ("serving", "train"):
        devices = override["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert isinstance(devices, s.Reset)


# --- the healthcheck against a real server ---------------------------------------------------------------------


def _healthcheck(compose: dict[str, Any], rest_port: int, model: str) -> subprocess.CompletedProcess[str]:
    test = compose["services"]["serving"]["healthcheck"]["test"]
    argv = [arg.replace(f"/{REST}", f"/{rest_port}") for arg in test[1:]]
    return subprocess.run(argv, env={"MODEL_NAME": model, "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=20, check=False)


@pytest.mark.slow
@pytest.mark.integration
def test_serving_healthcheck_passes_only_when_the_model_is_available(
    compose: dict[str, Any], served: s.ServedStack
) -> None:
    ok = _healthcheck(compose, served.rest_port, s.MODEL_NAME)
    assert ok.returncode == 0, ok.stderr
    unknown = _healthcheck(compose, served.rest_port, "no_such_model")
    assert unknown.returncode != 0
    closed = _healthcheck(compose, s.free_port(), s.MODEL_NAME)
    assert closed.returncode != 0
