"""k8s/ (kustomize): both overlays build, every object validates against the Kubernetes schemas offline (strict:
unknown fields are errors), and the invariants hold (images, ports, GPU only in the gpu overlay, probes, security
context, resources, selectors, NetworkPolicy, Prometheus annotations). The probe paths are tried on a real server.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from tests.deploy import support as s

# The oldest Kubernetes minor still widely run, and the newest the schema package ships.
K8S_VERSIONS = ("1.29.0", "latest")
GPU = "nvidia.com/gpu"
SERVING, API = "glimpse-serving", "glimpse-explain-api"


def _validate(obj: dict[str, Any], version: str) -> None:
    from kubernetes_validate import utils

    utils.validate(obj, utils.latest_version() if version == "latest" else version, strict=True)


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def _all_containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod(deployment)
    return [*pod.get("initContainers", []), *pod["containers"]]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _deployments(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return s.by_kind(objects, "Deployment")


@pytest.fixture(params=s.OVERLAYS)
def overlay(request: pytest.FixtureRequest, manifests: dict[str, list[dict[str, Any]]]) -> tuple[str, list[dict]]:
    return request.param, manifests[request.param]


# --- build and schema -------------------------------------------------------------------------------------------


def test_both_overlays_build_the_expected_objects(manifests: dict[str, list[dict[str, Any]]]) -> None:
    for name, objects in manifests.items():
        kinds = sorted(o["kind"] for o in objects)
        assert kinds == sorted([
            "Namespace", "PersistentVolumeClaim", "ConfigMap", "ConfigMap", "ConfigMap", "Deployment", "Deployment",
            "Service", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
        ]), name
        namespaced = [o for o in objects if o["kind"] != "Namespace"]
        assert {o["metadata"].get("namespace") for o in namespaced} == {"glimpse"}, name
        assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "glimpse" for o in objects)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(overlay: tuple[str, list[dict]], version: str) -> None:
    from kubernetes_validate import utils

    name, objects = overlay
    failures = []
    for obj in objects:
        try:
            _validate(obj, version)
        except (utils.ValidationError, utils.SchemaNotFoundError) as e:
            failures.append(f"{name}/{obj['kind']}/{obj['metadata']['name']}: {str(e).splitlines()[0]}")
    assert failures == []


def test_schema_validation_catches_typos_and_wrong_types(manifests: dict[str, list[dict[str, Any]]]) -> None:
    from kubernetes_validate import utils

    deployment = copy.deepcopy(_deployments(manifests["cpu"])[SERVING])
    s.container(deployment, "serving")["readinesProbe"] = {"httpGet": {"path": "/", "port": 8501}}
    with pytest.raises(utils.ValidationError):
        _validate(deployment, "latest")
    deployment = copy.deepcopy(_deployments(manifests["cpu"])[SERVING])
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(utils.ValidationError):
        _validate(deployment, "latest")


# --- images and GPU ---------------------------------------------------------------------------------------------


def test_images_per_overlay(manifests: dict[str, list[dict[str, Any]]]) -> None:
    expected = {"gpu": "tensorflow/serving:latest-gpu", "cpu": "tensorflow/serving:latest"}
    for name, objects in manifests.items():
        deployments = _deployments(objects)
        assert s.container(deployments[SERVING], "serving")["image"] == expected[name]
        api_image = s.container(deployments[API], "explain-api")["image"]
        assert re.fullmatch(r"glimpse/explain-api:\d+\.\d+\.\d+", api_image), api_image
        for deployment in deployments.values():
            for c in _all_containers(deployment):
                assert ":" in c["image"].rsplit("/", 1)[-1], f"{c['name']} has no explicit tag"


def test_gpu_limit_only_in_the_gpu_overlay_and_only_on_serving(manifests: dict[str, list[dict[str, Any]]]) -> None:
    gpu = _deployments(manifests["gpu"])
    serving = s.container(gpu[SERVING], "serving")["resources"]
    assert int(serving["limits"][GPU]) >= 1 and serving["requests"][GPU] == serving["limits"][GPU]
    assert _pod(gpu[SERVING])["nodeSelector"] and _pod(gpu[SERVING])["tolerations"][0]["key"] == GPU
    for name, objects in manifests.items():
        for dname, deployment in _deployments(objects).items():
            for c in _all_containers(deployment):
                if name == "gpu" and dname == SERVING and c["name"] == "serving":
                    continue
                for section in ("requests", "limits"):
                    assert GPU not in c["resources"].get(section, {}), (name, dname, c["name"])
    cpu_pod = _pod(_deployments(manifests["cpu"])[SERVING])
    assert "nodeSelector" not in cpu_pod and "tolerations" not in cpu_pod


# --- serving: ports, configs, models ----------------------------------------------------------------------------


def _args(container: dict[str, Any]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in container.get("args", []) if a.startswith("--") and "=" in a)


def test_serving_ports_args_and_service_agree(overlay: tuple[str, list[dict]]) -> None:
    _, objects = overlay
    serving = s.container(_deployments(objects)[SERVING], "serving")
    ports = {p["name"]: p["containerPort"] for p in serving["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    args = _args(serving)
    assert int(args["port"]) == ports["grpc"] and int(args["rest_api_port"]) == ports["http"]
    assert args["enable_batching"] == "true"
    service = s.by_kind(objects, "Service")[SERVING]
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "grpc": (8500, "grpc"), "http": (8501, "http")}


def test_serving_config_files_come_from_the_generated_config_maps(overlay: tuple[str, list[dict]]) -> None:
    _, objects = overlay
    deployment = _deployments(objects)[SERVING]
    serving = s.container(deployment, "serving")
    volumes = {v["name"]: v for v in _pod(deployment)["volumes"]}
    mounts = {m["mountPath"]: m for m in serving["volumeMounts"]}
    config_maps = s.by_kind(objects, "ConfigMap")
    args = _args(serving)
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        directory, _, filename = args[flag].rpartition("/")
        mount = mounts[directory]
        assert mount["readOnly"] is True
        config_map = config_maps[volumes[mount["name"]]["configMap"]["name"]]
        # Same text as the compose stack's file of that name.
        assert config_map["data"][filename] == (s.DEPLOY_DIR / "serving" / filename).read_text(), flag


def test_k8s_and_compose_serving_configs_are_the_same_files() -> None:
    for name in ("models.config", "batching.config", "monitoring.config"):
        assert (s.K8S_DIR / "base" / "config" / name).read_text() == (s.DEPLOY_DIR / "serving" / name).read_text()


def test_models_come_read_only_from_the_pvc_and_the_init_container_writes_them(
    overlay: tuple[str, list[dict]],
) -> None:
    from serving.config import load_model_server_config

    _, objects = overlay
    deployment = _deployments(objects)[SERVING]
    pod = _pod(deployment)
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v)
    assert claim in s.by_kind(objects, "PersistentVolumeClaim")
    serving_mount = next(m for m in s.container(deployment, "serving")["volumeMounts"]
                         if "persistentVolumeClaim" in volumes[m["name"]])
    assert serving_mount["readOnly"] is True
    config = load_model_server_config(s.K8S_DIR / "base" / "config" / "models.config")
    for model in config.model_config_list.config:
        assert model.base_path.startswith(serving_mount["mountPath"].rstrip("/") + "/")
    init = pod["initContainers"]
    assert len(init) == 1
    init_mount = next(m for m in init[0]["volumeMounts"] if "persistentVolumeClaim" in volumes[m["name"]])
    assert init_mount["mountPath"] == serving_mount["mountPath"] and not init_mount.get("readOnly", False)


# --- probes, security, resources --------------------------------------------------------------------------------


def test_probes_use_named_ports_and_the_right_paths(overlay: tuple[str, list[dict]]) -> None:
    _, objects = overlay
    deployments = _deployments(objects)
    for deployment in deployments.values():
        for c in _pod(deployment)["containers"]:
            names = {p["name"] for p in c["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                assert probe in c, (c["name"], probe)
                assert c[probe]["httpGet"]["port"] in names
    serving = s.container(deployments[SERVING], "serving")
    assert serving["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{s.MODEL_NAME}/metadata"
    assert serving["livenessProbe"]["httpGet"]["path"] == f"/v1/models/{s.MODEL_NAME}"
    assert serving["startupProbe"]["httpGet"]["path"] == f"/v1/models/{s.MODEL_NAME}"
    api = s.container(deployments[API], "explain-api")
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_pods_run_non_root_read_only_without_privilege_escalation(overlay: tuple[str, list[dict]]) -> None:
    _, objects = overlay
    for name, deployment in _deployments(objects).items():
        pod = _pod(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in _all_containers(deployment):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
        for c in pod["containers"]:
            tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in volumes[tmp["name"]], (name, c["name"])


def test_every_container_has_requests_and_limits(overlay: tuple[str, list[dict]]) -> None:
    _, objects = overlay
    for deployment in _deployments(objects).values():
        for c in _all_containers(deployment):
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][section]), (c["name"], section)


# --- selectors, HPA, PDB, NetworkPolicy, wiring -----------------------------------------------------------------


def test_selectors_match_pod_labels(overlay: tuple[str, list[dict]]) -> None:
    _, objects = overlay
    deployments = _deployments(objects)
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    for name, deployment in deployments.items():
        assert _matches(deployment["spec"]["selector"]["matchLabels"], pod_labels[name])
    for name, service in s.by_kind(objects, "Service").items():
        selected = [d for d, labels in pod_labels.items() if _matches(service["spec"]["selector"], labels)]
        assert selected == [name], f"Service {name} selects {selected}"
    pdb = s.by_kind(objects, "PodDisruptionBudget")[API]
    assert [d for d, labels in pod_labels.items() if _matches(pdb["spec"]["selector"]["matchLabels"], labels)] == [API]
    hpa = s.by_kind(objects, "HorizontalPodAutoscaler")[API]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", API)
    assert hpa["spec"]["minReplicas"] >= pdb["spec"]["minAvailable"] + 1


def test_network_policy_lets_only_the_api_and_prometheus_reach_serving(overlay: tuple[str, list[dict]]) -> None:
    _, objects = overlay
    deployments = _deployments(objects)
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    policy = next(iter(s.by_kind(objects, "NetworkPolicy").values()))
    selected = [d for d, labels in pod_labels.items() if _matches(policy["spec"]["podSelector"]["matchLabels"], labels)]
    assert selected == [SERVING]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = policy["spec"]["ingress"]
    api_rules = [r for r in rules if any("podSelector" in f and "namespaceSelector" not in f
                                         and _matches(f["podSelector"]["matchLabels"], pod_labels[API])
                                         for f in r["from"])]
    assert [p["port"] for r in api_rules for p in r["ports"]] == [8500]
    prometheus_rules = [r for r in rules if any(f.get("podSelector", {}).get("matchLabels", {})
                                                .get("app.kubernetes.io/name") == "prometheus" for f in r["from"])]
    assert [p["port"] for r in prometheus_rules for p in r["ports"]] == [8501]
    assert len(rules) == 2  # nothing else is let in


def test_api_reaches_serving_through_its_service(overlay: tuple[str, list[dict]]) -> None:
    _, objects = overlay
    api = s.container(_deployments(objects)[API], "explain-api")
    env = {e["name"]: e for e in api["env"]}
    host, port = env["SERVING_ADDRESS"]["value"].rsplit(":", 1)
    service = s.by_kind(objects, "Service")[host]
    assert host == SERVING and int(port) in {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"}
    assert env["GLIMPSE_DEFAULT_MODEL"]["value"] == s.MODEL_NAME
    assert env["GLIMPSE_API_KEYS"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert [p["containerPort"] for p in api["ports"]] == [8080]
    assert _deployments(objects)[API]["spec"]["replicas"] >= 2


def test_prometheus_annotations_point_at_the_metrics_endpoints(overlay: tuple[str, list[dict]]) -> None:
    from serving.config import load_monitoring_options

    _, objects = overlay
    monitoring = load_monitoring_options(s.DEPLOY_DIR / "serving" / "monitoring.config")
    expected = {SERVING: ("8501", monitoring.prometheus_path), API: ("8080", "/metrics")}
    for name, deployment in _deployments(objects).items():
        notes = deployment["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert (notes["prometheus.io/port"], notes["prometheus.io/path"]) == expected[name]
        ports = {str(p["containerPort"]) for c in _pod(deployment)["containers"] for p in c["ports"]}
        assert notes["prometheus.io/port"] in ports


def test_service_monitor_example_is_optional_and_matches_the_services(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    path = s.K8S_DIR / "examples" / "servicemonitor.yaml"
    for kustomization in s.K8S_DIR.rglob("kustomization.yaml"):
        assert "servicemonitor" not in kustomization.read_text().lower(), kustomization
    monitors = [d for d in yaml.safe_load_all(path.read_text()) if d]
    services = s.by_kind(manifests["cpu"], "Service")
    assert {m["kind"] for m in monitors} == {"ServiceMonitor"} and len(monitors) == 2
    paths = {}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        matched = [n for n, svc in services.items()
                   if _matches(monitor["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])]
        assert len(matched) == 1
        port_names = {p["name"] for p in services[matched[0]]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            paths[matched[0]] = endpoint["path"]
    assert paths == {SERVING: "/monitoring/prometheus/metrics", API: "/metrics"}


# --- the probe paths against a real server ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_serving_probe_paths_answer_as_the_probes_expect(
    manifests: dict[str, list[dict[str, Any]]], served: s.ServedStack
) -> None:
    serving = s.container(_deployments(manifests["gpu"])[SERVING], "serving")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        code, _ = s.http_get(served.rest + serving[probe]["httpGet"]["path"])
        assert 200 <= code < 400, probe
    # Readiness means a version serves: an unknown model's metadata is not 2xx.
    code, _ = s.http_get(served.rest + "/v1/models/no_such_model/metadata")
    assert code == 404
