"""k8s/training (Kubeflow TFJob), k8s/tuning (distributed Keras Tuner), k8s/studies (a study's shards and their
merge) and k8s/kserve (KServe InferenceService with the explain API as explainer): each builds with kustomize, the
built-in kinds and every pod template validate against the Kubernetes schemas, the custom resources against their
CRD's schema (tests/deploy/crd.py), strictly; and the wiring holds: the commands parse with the CLI they run, the
ports, names and volumes the parts use to find each other agree.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import shutil
import subprocess
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from tests.deploy import crd
from tests.deploy import support as s

K8S_VERSIONS = ("1.29.0", "latest")
GPU = "nvidia.com/gpu"
FOLDERS = ("training", "tuning", "studies", "kserve")
EXPECTED_KINDS = {
    "training": ["PersistentVolumeClaim", "TFJob"],
    "tuning": ["Job", "Job", "PersistentVolumeClaim", "Service"],
    "studies": ["Job", "Job", "PersistentVolumeClaim"],
    "kserve": ["InferenceService", "Service"],
}
MODELS_CLAIM = "glimpse-models"
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
# KServe's tensorflow runtime (config/runtimes/kserve-tensorflow-serving.yaml): tensorflow_model_server --port=9000.
KSERVE_TF_GRPC_PORT = 9000


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    """``kubectl kustomize k8s/<folder>`` of each folder (skipped, saying why, when kubectl is not installed)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the kustomize builds and their schema checks cannot run")
    return {folder: s.kustomize_dir(s.K8S_DIR / folder) for folder in FOLDERS}


def _one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def _pod_templates(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every pod template of an object: a Job's, each TFJob replica's, each InferenceService component's (its spec)."""
    if obj["kind"] == "Job":
        return {obj["metadata"]["name"]: obj["spec"]["template"]}
    if obj["kind"] == "TFJob":
        return {role: spec["template"] for role, spec in obj["spec"]["tfReplicaSpecs"].items()}
    if obj["kind"] == "InferenceService":
        pod_fields = ("containers", "volumes", "securityContext", "automountServiceAccountToken", "nodeSelector",
                      "tolerations")
        return {component: {"spec": {k: v for k, v in spec.items() if k in pod_fields}}
                for component, spec in obj["spec"].items() if "containers" in spec}
    return {}


def _containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    pod = template["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _claims(template: dict[str, Any]) -> dict[str, str]:
    """Volume name -> claim name of the template's PVC volumes."""
    return {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in template["spec"].get("volumes", [])
            if "persistentVolumeClaim" in v}


def _mount_of(template: dict[str, Any], container: dict[str, Any], path: str) -> tuple[dict[str, Any], dict]:
    """The mount holding ``path`` in ``container`` (the longest mount path above it) and its volume."""
    candidates = [m for m in container.get("volumeMounts", [])
                  if PurePosixPath(path).is_relative_to(PurePosixPath(m["mountPath"]))]
    assert candidates, (container["name"], path)
    mount = max(candidates, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == mount["name"])
    return mount, volume


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _parse(argv: list[str]) -> Any:
    """``glimpse ARGV`` as the CLI parses it (SystemExit on a flag it does not know)."""
    from glimpse.cli import build_parser

    return build_parser(argv).parse_args(argv)


def _models_config_base_paths() -> dict[str, str]:
    from serving.config import load_model_server_config

    config = load_model_server_config(s.K8S_DIR / "base" / "config" / "models.config")
    return {m.name: m.base_path for m in config.model_config_list.config}


# --- build and schemas ------------------------------------------------------------------------------------------


def test_each_folder_builds_the_expected_objects_in_the_glimpse_namespace(built: dict[str, list[dict]]) -> None:
    for folder, objects in built.items():
        assert sorted(o["kind"] for o in objects) == EXPECTED_KINDS[folder], folder
        assert {o["metadata"].get("namespace") for o in objects} == {"glimpse"}, folder
        assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "glimpse" for o in objects), folder


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_built_in_kinds_and_every_pod_template_validate_against_kubernetes(
    built: dict[str, list[dict]], version: str
) -> None:
    from kubernetes_validate import utils

    target = utils.latest_version() if version == "latest" else version
    failures = []
    for folder, objects in built.items():
        for obj in objects:
            if obj["kind"] == "TFJob":  # its replicas' pod templates, as core/v1 PodTemplates
                checked = [{"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role}, "template": t}
                           for role, t in _pod_templates(obj).items()]
            elif obj["kind"] == "InferenceService":  # its components carry KServe's fields: the CRD's schema checks
                checked = []
            else:
                checked = [obj]
            for item in checked:
                try:
                    utils.validate(item, target, strict=True)
                except (utils.ValidationError, utils.SchemaNotFoundError) as e:
                    failures.append(f"{folder}/{item['kind']}/{item['metadata']['name']}: {str(e).splitlines()[0]}")
    assert failures == []


def test_custom_resources_validate_against_their_crd_schema(built: dict[str, list[dict]]) -> None:
    tfjob = _one(built["training"], "TFJob")
    isvc = _one(built["kserve"], "InferenceService")
    assert (tfjob["apiVersion"], isvc["apiVersion"]) == ("kubeflow.org/v1", "serving.kserve.io/v1beta1")
    assert crd.crd_errors(tfjob) == []
    assert crd.crd_errors(isvc) == []


def test_crd_validation_catches_unknown_fields_and_wrong_types(built: dict[str, list[dict]]) -> None:
    tfjob = _one(built["training"], "TFJob")
    bad = copy.deepcopy(tfjob)
    bad["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = "two"
    assert any("replicas" in e for e in crd.crd_errors(bad))
    bad = copy.deepcopy(tfjob)
    bad["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["resource"] = {}
    assert any("'resource' was unexpected" in e for e in crd.crd_errors(bad))
    bad = copy.deepcopy(tfjob)
    bad["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "2222"
    assert any("containerPort" in e for e in crd.crd_errors(bad))
    isvc = _one(built["kserve"], "InferenceService")
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["model"]["storageURI"] = bad["spec"]["predictor"]["model"].pop("storageUri")
    assert any("'storageURI' was unexpected" in e for e in crd.crd_errors(bad))
    bad = copy.deepcopy(isvc)
    bad["spec"]["explainer"]["minReplicas"] = "2"
    assert any("minReplicas" in e for e in crd.crd_errors(bad))


# --- what every pod template shares -----------------------------------------------------------------------------


def test_every_pod_runs_non_root_read_only_with_resources_and_a_tagged_image(built: dict[str, list[dict]]) -> None:
    for folder, objects in built.items():
        for obj in objects:
            for name, template in _pod_templates(obj).items():
                pod = template["spec"]
                where = f"{folder}/{name}"
                assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
                assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
                assert pod["automountServiceAccountToken"] is False, where
                for c in _containers(template):
                    sc = c["securityContext"]
                    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
                    assert sc["capabilities"]["drop"] == ["ALL"], where
                    for section in ("requests", "limits"):
                        assert {"cpu", "memory"} <= set(c["resources"][section]), (where, c["name"], section)
                    assert ":" in c["image"].rsplit("/", 1)[-1], (where, c["name"], "no explicit tag")
                    if GPU in c["resources"]["limits"]:
                        assert c["resources"]["requests"][GPU] == c["resources"]["limits"][GPU], where
                        assert pod["tolerations"][0]["key"] == GPU and pod["nodeSelector"], where
                for c in pod["containers"]:
                    _, tmp = _mount_of(template, c, "/tmp")
                    assert "emptyDir" in tmp, (where, c["name"])


def test_images_are_the_projects_and_share_the_base_tags(built: dict[str, list[dict]]) -> None:
    base = {i["name"]: i["newTag"] for i in yaml.safe_load((s.K8S_DIR / "base" / "kustomization.yaml").read_text())
            ["images"]}
    for folder in ("training", "tuning", "studies"):
        images = {c["image"] for o in built[folder] for t in _pod_templates(o).values() for c in _containers(t)}
        assert len(images) == 1 and images.pop().startswith("glimpse/training:"), folder
    isvc = _one(built["kserve"], "InferenceService")
    explainer = isvc["spec"]["explainer"]["containers"][0]
    assert explainer["image"] == f"glimpse/explain-api:{base['glimpse/explain-api']}"
    # glimpse/training is docker/training.Dockerfile: its entrypoint is `glimpse train`, the commands below name
    # their subcommand themselves.
    entrypoint = next(s.exec_form(i.args) for i in s.dockerfile_instructions(s.DOCKER_DIR / "training.Dockerfile")
                      if i.keyword == "ENTRYPOINT")
    assert entrypoint == ["glimpse", "train"]


# --- training: the TFJob ----------------------------------------------------------------------------------------


def test_tfjob_runs_multiworker_training_on_a_chief_and_workers_with_gpus(built: dict[str, list[dict]]) -> None:
    tfjob = _one(built["training"], "TFJob")
    replicas = tfjob["spec"]["tfReplicaSpecs"]
    assert set(replicas) == {"Chief", "Worker"}
    assert replicas["Chief"]["replicas"] == 1 and replicas["Worker"]["replicas"] >= 1
    commands = set()
    for role, spec in replicas.items():
        assert spec["restartPolicy"] == "ExitCode", role  # preempted (130-143): restarted, resumes from the backup
        (container,) = spec["template"]["spec"]["containers"]
        assert container["name"] == "tensorflow", role  # where the operator puts TF_CONFIG
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"tfjob-port": 2222}
        argv = [*container["command"], *container["args"]]
        assert argv[:2] == ["glimpse", "train"] and _flag(argv, "--distribute") == "multiworker", role
        assert int(container["resources"]["limits"][GPU]) >= 1, role
        assert "TF_CONFIG" not in _env(container), role  # the operator's, per replica
        commands.add(tuple(argv))
    assert len(commands) == 1  # every replica runs the same program


def test_tfjob_arguments_are_glimpse_train_flags(built: dict[str, list[dict]]) -> None:
    tfjob = _one(built["training"], "TFJob")
    container = tfjob["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]
    args = _parse(["train", *container["args"]])
    assert args.distribute == "multiworker"


def test_the_chief_exports_the_next_version_where_tf_serving_polls(built: dict[str, list[dict]]) -> None:
    tfjob = _one(built["training"], "TFJob")
    replicas = tfjob["spec"]["tfReplicaSpecs"]
    chief = replicas["Chief"]["template"]
    container = chief["spec"]["containers"][0]
    export_dir, name = _flag(container["args"], "--export-dir"), _flag(container["args"], "--name")
    model_dir = f"{export_dir.rstrip('/')}/{name}"
    mount, volume = _mount_of(chief, container, model_dir)
    assert volume["persistentVolumeClaim"]["claimName"] == MODELS_CLAIM and not mount.get("readOnly", False)
    # TF Serving (k8s/base) mounts the same claim at the same path and serves that directory's versions.
    serving = s.by_kind(s.kustomize("gpu"), "Deployment")["glimpse-serving"]
    serving_container = s.container(serving, "serving")
    serving_mount, serving_volume = _mount_of(serving["spec"]["template"], serving_container, model_dir)
    assert serving_volume["persistentVolumeClaim"]["claimName"] == MODELS_CLAIM
    assert serving_mount["mountPath"] == mount["mountPath"]
    assert _models_config_base_paths()[name] == model_dir
    # The workers export nothing and must not hold the ReadWriteOnce models claim.
    worker = replicas["Worker"]["template"]
    assert MODELS_CLAIM not in _claims(worker).values()
    # The backup and TensorBoard directory is one claim every replica mounts, ReadWriteMany.
    logdir = _flag(container["args"], "--logdir")
    claims = {role: _mount_of(spec["template"], spec["template"]["spec"]["containers"][0], logdir)[1]
              for role, spec in replicas.items()}
    assert {v["persistentVolumeClaim"]["claimName"] for v in claims.values()} == {"glimpse-training"}
    pvc = _one(built["training"], "PersistentVolumeClaim", "glimpse-training")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


# --- tuning: a chief (the oracle) and an indexed Job of workers --------------------------------------------------


def test_tuner_chief_serves_the_oracle_and_workers_find_it(built: dict[str, list[dict]]) -> None:
    objects = built["tuning"]
    chief_job = _one(objects, "Job", "glimpse-tuner-chief")
    workers_job = _one(objects, "Job", "glimpse-tuner-workers")
    service = _one(objects, "Service", "glimpse-tuner-oracle")
    (chief,) = chief_job["spec"]["template"]["spec"]["containers"]
    (worker,) = workers_job["spec"]["template"]["spec"]["containers"]
    chief_env, worker_env = _env(chief), _env(worker)
    assert chief_env["KERASTUNER_TUNER_ID"]["value"] == "chief"
    assert chief_env["KERASTUNER_ORACLE_IP"]["value"] == "0.0.0.0"
    oracle_port = {p["name"]: p["containerPort"] for p in chief["ports"]}["oracle"]
    assert int(chief_env["KERASTUNER_ORACLE_PORT"]["value"]) == oracle_port
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "oracle"
    # The Service selects the chief's pod and no worker's.
    labels = {n: j["spec"]["template"]["metadata"]["labels"] for n, j in
              (("chief", chief_job), ("workers", workers_job))}
    selected = [n for n, lab in labels.items() if all(lab.get(k) == v for k, v in service["spec"]["selector"].items())]
    assert selected == ["chief"]
    assert worker_env["KERASTUNER_ORACLE_IP"]["value"] == service["metadata"]["name"]
    assert int(worker_env["KERASTUNER_ORACLE_PORT"]["value"]) == port["port"]
    # One tuner id per index (a restarted worker gets its unfinished trial back), never one with "chief" in it.
    assert workers_job["spec"]["completionMode"] == "Indexed"
    assert workers_job["spec"]["completions"] == workers_job["spec"]["parallelism"] >= 2
    index_var = next(n for n, e in worker_env.items()
                     if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == COMPLETION_INDEX)
    names = list(worker_env)
    assert names.index(index_var) < names.index("KERASTUNER_TUNER_ID")  # $(VAR) expands only earlier variables
    tuner_id = worker_env["KERASTUNER_TUNER_ID"]["value"]
    assert f"$({index_var})" in tuner_id and "chief" not in tuner_id
    assert int(worker["resources"]["limits"][GPU]) >= 1


def test_tuner_chief_and_workers_run_the_same_search_in_a_shared_directory(built: dict[str, list[dict]]) -> None:
    objects = built["tuning"]
    jobs = {n: _one(objects, "Job", n) for n in ("glimpse-tuner-chief", "glimpse-tuner-workers")}
    containers = {n: j["spec"]["template"]["spec"]["containers"][0] for n, j in jobs.items()}
    argvs = {n: [*c["command"], *c["args"]] for n, c in containers.items()}
    assert len({tuple(a) for a in argvs.values()}) == 1
    argv = argvs["glimpse-tuner-chief"]
    assert argv[:2] == ["glimpse", "tune"]
    parsed = _parse(argv[1:])
    out = str(parsed.out)
    for name, job in jobs.items():
        _, volume = _mount_of(job["spec"]["template"], containers[name], out)
        assert volume["persistentVolumeClaim"]["claimName"] == "glimpse-tuning", name
    assert _one(objects, "PersistentVolumeClaim", "glimpse-tuning")["spec"]["accessModes"] == ["ReadWriteMany"]
    # The chief exports the best model into the models claim, where TF Serving polls.
    chief_job = jobs["glimpse-tuner-chief"]
    mount, volume = _mount_of(chief_job["spec"]["template"], containers["glimpse-tuner-chief"],
                              f"{parsed.export_dir}/{parsed.name}")
    assert volume["persistentVolumeClaim"]["claimName"] == MODELS_CLAIM and not mount.get("readOnly", False)
    assert _models_config_base_paths()[parsed.name] == f"{parsed.export_dir}/{parsed.name}"


# --- studies: shards and their merge ----------------------------------------------------------------------------


def test_study_shards_cover_every_index_and_the_merge_waits_for_them(built: dict[str, list[dict]]) -> None:
    objects = built["studies"]
    shards = _one(objects, "Job", "glimpse-study-shards")
    merge = _one(objects, "Job", "glimpse-study-merge")
    n = shards["spec"]["completions"]
    assert shards["spec"]["completionMode"] == "Indexed" and shards["spec"]["parallelism"] == n >= 2
    (shard,) = shards["spec"]["template"]["spec"]["containers"]
    index_var = next(name for name, e in _env(shard).items()
                     if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == COMPLETION_INDEX)
    shard_argv = [*shard["command"], *shard["args"]]
    assert _flag(shard_argv, "--shard") == f"$({index_var})/{n}"
    study = shard_argv[2]
    out = _flag(shard_argv, "--out")
    for index in range(n):  # what each pod runs, as the CLI parses it
        parsed = _parse([a.replace(f"$({index_var})", str(index)) for a in shard_argv[1:]])
        assert (parsed.name, parsed.shard, str(parsed.out)) == (study, f"{index}/{n}", out)
    (merger,) = merge["spec"]["template"]["spec"]["containers"]
    merge_argv = [*merger["command"], *merger["args"]]
    parsed = _parse(merge_argv[1:])
    assert (parsed.name, str(parsed.merge)) == (study, out)
    assert GPU not in merger["resources"]["limits"]
    (wait,) = merge["spec"]["template"]["spec"]["initContainers"]
    script = wait["command"][-1]
    assert f"{out}/shards/shard-*-of-{n}.json" in script and f"-ge {n}" in script
    for job, container in ((shards, shard), (merge, merger)):
        _, volume = _mount_of(job["spec"]["template"], container, out)
        assert volume["persistentVolumeClaim"]["claimName"] == "glimpse-studies"
    assert _one(objects, "PersistentVolumeClaim", "glimpse-studies")["spec"]["accessModes"] == ["ReadWriteMany"]


# --- KServe: TF Serving predictor, the explain API as explainer -------------------------------------------------


def test_kserve_predictor_is_tf_serving_on_a_gpu_over_the_models_claim(built: dict[str, list[dict]]) -> None:
    isvc = _one(built["kserve"], "InferenceService")
    name = isvc["metadata"]["name"]
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "tensorflow" and model["runtime"] == "kserve-tensorflow-serving"
    assert model["runtimeVersion"].endswith("-gpu") and model["protocolVersion"] == "v1"
    assert int(model["resources"]["limits"][GPU]) >= 1
    assert model["resources"]["requests"][GPU] == model["resources"]["limits"][GPU]
    # pvc://<claim>/<path>: the same directory TF Serving of k8s/base serves for this model name.
    claim, _, path = model["storageUri"].removeprefix("pvc://").partition("/")
    assert model["storageUri"].startswith("pvc://") and claim == MODELS_CLAIM
    assert _models_config_base_paths()[name] == f"/models/{path}"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["spec"]["predictor"]["minReplicas"] >= 1  # the explainer's gRPC calls need a running predictor


def test_kserve_explainer_is_the_explain_api_calling_tf_serving_over_grpc(built: dict[str, list[dict]]) -> None:
    isvc = _one(built["kserve"], "InferenceService")
    name = isvc["metadata"]["name"]
    (explainer,) = isvc["spec"]["explainer"]["containers"]
    env = _env(explainer)
    assert env["GLIMPSE_DEFAULT_MODEL"]["value"] == name
    host, port = env["SERVING_ADDRESS"]["value"].rsplit(":", 1)
    service = _one(built["kserve"], "Service", host)
    assert int(port) == KSERVE_TF_GRPC_PORT
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(KSERVE_TF_GRPC_PORT,) * 2]
    assert service["spec"]["selector"] == {"serving.kserve.io/inferenceservice": name, "component": "predictor"}
    assert explainer["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert explainer["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["containerPort"] for p in explainer["ports"]} == {8080}
    assert isvc["spec"]["explainer"]["minReplicas"] >= 2


def test_kserve_explainer_command_leaves_kserves_arguments_aside(built: dict[str, list[dict]]) -> None:
    """KServe appends --model_name, --predictor_host, --http_port to an explainer's arguments, which `python -m
    explain_api` refuses; the shell wrapper passes the explain API only its own flags."""
    from explain_api.cli import configure_api

    isvc = _one(built["kserve"], "InferenceService")
    command = isvc["spec"]["explainer"]["containers"][0]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    script = command[2]
    words = shlex.split(script)
    assert words[:4] == ["exec", "python", "-m", "explain_api"]
    kserve_args = ["--model_name", "tuxpaint", "--predictor_host", "tuxpaint-predictor.glimpse", "--http_port", "8080"]
    echo = script.replace("python -m explain_api", "printf '%s\\n'")
    ran = subprocess.run([*command[:2], echo, *command[3:], *kserve_args], capture_output=True, text=True, timeout=10,
                         check=True)
    assert ran.stdout.split() == words[4:]
    parser = argparse.ArgumentParser(prog="python -m explain_api")
    configure_api(parser)
    assert parser.parse_args(words[4:]).port == 8080
    with pytest.raises(SystemExit):  # the reason for the wrapper
        parser.parse_args([*words[4:], *kserve_args])
