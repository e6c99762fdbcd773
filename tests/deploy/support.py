"""Helpers of the deployment tests: the compose files as compose reads them, kustomize builds, Dockerfile parsing."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"
K8S_DIR = REPO_ROOT / "k8s"
DEPLOY_DIR = REPO_ROOT / "deploy"
COMPOSE = REPO_ROOT / "docker-compose.yml"
COMPOSE_CPU = REPO_ROOT / "docker-compose.cpu.yml"
OVERLAYS = ("gpu", "cpu")


# ---------------------------------------------------------------------------------------------------------------
# Compose


@dataclass(frozen=True)
class Reset:
    """A value tagged ``!reset`` (compose removes the key from the merged model)."""

    value: Any


@dataclass(frozen=True)
class Override:
    """A value tagged ``!override`` (compose replaces the base value instead of merging)."""

    value: Any


class _ComposeLoader(yaml.SafeLoader):
    """YAML as compose reads it: plain YAML plus the ``!reset`` and ``!override`` tags."""


def _construct(kind: type) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return kind(loader.construct_sequence(node, deep=True))
        if isinstance(node, yaml.MappingNode):
            return kind(loader.construct_mapping(node, deep=True))
        return kind(loader.construct_scalar(node))

    return construct


_ComposeLoader.add_constructor("!reset", _construct(Reset))
_ComposeLoader.add_constructor("!override", _construct(Override))


def load_compose(path: Path) -> dict[str, Any]:
    """A compose file with ``!reset``/``!override`` values kept as :class:`Reset`/:class:`Override`."""
    with path.open() as f:
        data = yaml.load(f, Loader=_ComposeLoader)  # noqa: S506 - a SafeLoader subclass with two extra tags
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return data


def plain(value: Any) -> Any:
    """The document with the tag markers replaced by their values (what the JSON schema sees)."""
    if isinstance(value, (Reset, Override)):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def merge_compose(base: Any, override: Any) -> Any:
    """Compose's merge of an override file, for mappings and the tags (sequences in overrides are replaced)."""
    if isinstance(override, Override):
        return plain(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = copy.deepcopy(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge_compose(merged[key], value)
            else:
                merged[key] = plain(value)
        return merged
    return plain(override)


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose's interpolation of ``${VAR}``/``${VAR:-default}`` (from ``env``, default none) and ``$$`` -> ``$``."""
    env = {} if env is None else env
    if isinstance(value, str):
        return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


def compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema, as vendored by check-jsonschema (Apache-2.0, compose-spec)."""
    from importlib import resources

    return json.loads(resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
                      .read_text())


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes


def kustomize(overlay: str) -> list[dict[str, Any]]:
    """``kubectl kustomize k8s/overlays/<overlay>`` as a list of objects."""
    return kustomize_dir(K8S_DIR / "overlays" / overlay)


def kustomize_dir(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIRECTORY`` as a list of objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return c
    raise KeyError(f"no container {name!r} in {deployment['metadata']['name']}")


# ---------------------------------------------------------------------------------------------------------------
# Dockerfiles


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """A Dockerfile's instructions (continuations joined, comments and the syntax line dropped)."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD (or of HEALTHCHECK's CMD)."""
    text = args.strip()
    if not text.startswith("["):
        raise ValueError(f"not exec form: {args}")
    value = json.loads(text)
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError(f"not a JSON array of strings: {args}")
    return value


def copy_sources(path: Path, stage: int = 0) -> list[str]:
    """The build-context sources of a stage's COPY instructions (``--from`` copies excluded)."""
    sources: list[str] = []
    for ins in dockerfile_instructions(path):
        if ins.keyword != "COPY" or ins.stage != stage:
            continue
        words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
        if any(w.startswith("--from") for w in shlex.split(ins.args)):
            continue
        sources += words[:-1]
    return sources


def requirements(path: Path) -> dict[str, str]:
    """A pinned requirements file as {canonical name: version}."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"{path.name}: {line!r} is not pinned with ==")
        pins[canonical(name)] = version.strip()
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().strip()


# ---------------------------------------------------------------------------------------------------------------
# Processes: the serve image's entrypoint with the compose stack's serving flags, run on this machine

MODEL_NAME = "tuxpaint"  # the model deploy/serving/models.config serves and the stacks wait for


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def photo_png(name: str = "chelsea", size: int = 96) -> bytes:
    """A real photo from scikit-image, resized, as PNG bytes."""
    import io

    from PIL import Image
    from skimage import data

    out = io.BytesIO()
    Image.fromarray(getattr(data, name)()).convert("RGB").resize((size, size)).save(out, format="PNG")
    return out.getvalue()


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(predicate: Any, timeout: float, what: str, process: subprocess.Popen[Any] | None = None,
               log: Path | None = None) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"process exited with {process.returncode} before {what}:\n{tail}")
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def stop_process(process: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """SIGTERM, then wait; SIGKILL if it does not stop in time (the test then fails on the return code)."""
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            return -9
    return int(process.returncode)


def host_path(source: str) -> Path:
    """A compose bind source as a host path (relative sources are relative to the compose file)."""
    return (REPO_ROOT / source).resolve()


def compose_serving_flags(compose: dict[str, Any], config_dir: Path) -> list[str]:
    """docker-compose.yml's serving command with its container paths (/config/...) mapped to ``config_dir``."""
    serving = compose["services"]["serving"]
    target = next(v["target"] for v in serving["volumes"] if host_path(v["source"]) == DEPLOY_DIR / "serving")
    return [flag.replace(target + "/", f"{config_dir}/") for flag in serving["command"]]


@dataclass
class ServedStack:
    """``docker/serve.Dockerfile``'s ENTRYPOINT, run here with the compose serving flags, on free ports."""

    process: subprocess.Popen[Any]
    grpc_port: int
    rest_port: int
    log: Path
    model_root: Path
    config_dir: Path

    @classmethod
    def start(cls, model_root: Path, workdir: Path) -> ServedStack:
        import sys

        compose = interpolate(plain(load_compose(COMPOSE)))
        models_target = next(v["target"] for v in compose["services"]["serving"]["volumes"]
                             if v["source"].endswith("models"))
        config_dir = workdir / "config"
        config_dir.mkdir()
        for name in ("batching.config", "monitoring.config"):
            shutil.copy(DEPLOY_DIR / "serving" / name, config_dir / name)
        # The model config's base paths are container paths under the models mount: point them at model_root.
        text = (DEPLOY_DIR / "serving" / "models.config").read_text()
        (config_dir / "models.config").write_text(text.replace(f'"{models_target}/', f'"{model_root}/'))
        entrypoint = next(exec_form(i.args) for i in dockerfile_instructions(DOCKER_DIR / "serve.Dockerfile")
                          if i.keyword == "ENTRYPOINT")
        grpc_port, rest_port = free_port(), free_port()
        argv = [*entrypoint, *compose_serving_flags(compose, config_dir),
                f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--bind_address=127.0.0.1"]
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "MODEL_NAME": MODEL_NAME, "MODEL_BASE_PATH": str(model_root), "TF_CPP_MIN_LOG_LEVEL": "2"}
        log = workdir / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        stack = cls(process, grpc_port, rest_port, log, model_root, config_dir)
        try:
            wait_until(stack.available, 180, f"model {MODEL_NAME} AVAILABLE", process, log)
        except BaseException:
            stop_process(process)
            raise
        return stack

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def available(self) -> bool:
        code, body = http_get(f"{self.rest}/v1/models/{MODEL_NAME}")
        return code == 200 and b'"AVAILABLE"' in body

    def stop(self) -> int:
        return stop_process(self.process)
