"""The images' install sets: docker/explain-api.requirements.txt and docker/serve.requirements.txt.

Unit tests check that each set provides every third-party module its packages import and agrees with pyproject.
The slow test builds the explain API's environment the way its Dockerfile does (a fresh venv, the requirement set,
the Dockerfile's COPY sources with `pip install --no-deps .`), checks that TensorFlow is absent, and runs the image's
ENTRYPOINT + CMD and HEALTHCHECK here against the serve image's entrypoint (which runs `glimpse serve`).
"""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.deploy import support as s

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

API_REQUIREMENTS = s.DOCKER_DIR / "explain-api.requirements.txt"
SERVE_REQUIREMENTS = s.DOCKER_DIR / "serve.requirements.txt"
FIRST_PARTY = {
    "glimpse", "glimpse_wire", "rendering", "explain_api", "serving", "training", "whatif", "studies", "tests",
}  # fmt: skip
# What each image runs (benchmarks, proto regeneration and the container launcher are not run inside them).
API_MODULES = [
    *sorted((s.REPO_ROOT / "explain_api").glob("*.py")),
    *sorted((s.REPO_ROOT / "rendering").glob("*.py")),
    *sorted(p for p in (s.REPO_ROOT / "glimpse_wire").glob("*.py") if p.name not in ("_regen.py", "_protogen.py")),
    *(s.REPO_ROOT / "glimpse" / n for n in ("__init__.py", "__main__.py", "cli.py", "up.py")),
]
SERVE_MODULES = [
    *sorted(p for p in (s.REPO_ROOT / "serving").glob("*.py") if p.name not in ("bench.py", "_regen.py",
                                                                                  "docker_launch.py")),
    *sorted(p for p in (s.REPO_ROOT / "glimpse_wire").glob("*.py") if p.name not in ("_regen.py", "_protogen.py")),
    *(s.REPO_ROOT / "glimpse" / n for n in ("__init__.py", "__main__.py", "cli.py")),
]


def _pyproject() -> dict:
    return tomllib.loads((s.REPO_ROOT / "pyproject.toml").read_text())


def _imports(paths: list[Path]) -> set[str]:
    """Top-level names of every absolute import in these files (module level and inside functions)."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _third_party(paths: list[Path]) -> set[str]:
    return {n for n in _imports(paths) if n not in sys.stdlib_module_names and n not in FIRST_PARTY}


def _unprovided(paths: list[Path], pins: dict[str, str]) -> list[str]:
    providers = metadata.packages_distributions()
    missing = []
    for module in sorted(_third_party(paths)):
        dists = {s.canonical(d) for d in providers.get(module, [])}
        if not dists & set(pins):
            missing.append(f"{module} (from {sorted(dists) or 'an unknown distribution'})")
    return missing


# --- unit: the requirement sets ---------------------------------------------------------------------------------


def test_api_requirements_are_the_api_extra_pinned() -> None:
    pins = s.requirements(API_REQUIREMENTS)
    for spec in _pyproject()["project"]["optional-dependencies"]["api"]:
        req = Requirement(spec)
        name = s.canonical(req.name)
        assert name in pins, f"the api extra's {req.name} is missing from {API_REQUIREMENTS.name}"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy the api extra's {req}"


def test_api_requirements_carry_no_tensorflow() -> None:
    pins = s.requirements(API_REQUIREMENTS)
    assert not {"tensorflow", "tensorflow-cpu", "keras", "tensorflow-serving-api", "tf-keras"} & set(pins)


@pytest.mark.parametrize(("path", "modules"), [(API_REQUIREMENTS, API_MODULES), (SERVE_REQUIREMENTS, SERVE_MODULES)],
                         ids=["explain-api", "serve"])
def test_requirement_set_provides_every_imported_module(path: Path, modules: list[Path]) -> None:
    assert _unprovided(modules, s.requirements(path)) == []


def test_import_check_notices_a_missing_module() -> None:
    # Without pillow in the set, the API's image decoding would fail: the check says so.
    pins = {k: v for k, v in s.requirements(API_REQUIREMENTS).items() if k != "pillow"}
    assert any(m.startswith("PIL ") for m in _unprovided(API_MODULES, pins))


def test_api_image_code_imports_only_the_packages_it_copies() -> None:
    imported = {n for n in _imports(API_MODULES) if n in FIRST_PARTY}
    assert imported <= {"glimpse", "glimpse_wire", "rendering", "explain_api"}


def test_pins_agree_with_the_projects_dependencies() -> None:
    declared = {}
    for spec in _pyproject()["project"]["dependencies"]:
        req = Requirement(spec)
        declared[s.canonical(req.name)] = req
    for path in (API_REQUIREMENTS, SERVE_REQUIREMENTS):
        for name, version in s.requirements(path).items():
            if name in declared:
                assert declared[name].specifier.contains(version), f"{path.name}: {name}=={version} vs {declared[name]}"


# --- slow: the explain API's image environment, built here ------------------------------------------------------


def _run(argv: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin"
    return env


@pytest.fixture(scope="module")
def api_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the explain API image's install set, made as docker/explain-api.Dockerfile makes it."""
    root = tmp_path_factory.mktemp("api-image")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root, timeout=120)
    env = _clean_env(venv)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "install", "--no-cache-dir", "-r", str(API_REQUIREMENTS)], cwd=root, timeout=600, env=env)
    src = root / "src"
    src.mkdir()
    for source in s.copy_sources(s.DOCKER_DIR / "explain-api.Dockerfile", 0):
        origin = s.REPO_ROOT / source
        if origin == API_REQUIREMENTS:
            continue
        if origin.is_dir():
            shutil.copytree(origin, src / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(origin, src / source)
    _run([*pip, "install", "--no-cache-dir", "--no-deps", str(src)], cwd=root, timeout=600, env=env)
    return venv


@pytest.mark.slow
@pytest.mark.integration
def test_glimpse_api_help_runs_without_tensorflow(api_venv: Path) -> None:
    env = _clean_env(api_venv)
    cwd = api_venv.parent
    out = _run([str(api_venv / "bin" / "glimpse"), "api", "--help"], cwd=cwd, timeout=60, env=env)
    assert "--serving-address" in out
    probe = ("import importlib.util as u, json; "
             "print(json.dumps({m: u.find_spec(m) is not None for m in ('tensorflow', 'keras', 'explain_api')}))")
    found = json.loads(_run([str(api_venv / "bin" / "python"), "-c", probe], cwd=cwd, timeout=60, env=env))
    assert found == {"tensorflow": False, "keras": False, "explain_api": True}
    installed = _run([str(api_venv / "bin" / "python"), "-m", "pip", "list", "--format=json"], cwd=cwd, timeout=60,
                     env=env)
    names = {s.canonical(p["name"]) for p in json.loads(installed)}
    assert "tensorflow" not in names and "glimpse" in names


@pytest.fixture
def api_process(api_venv: Path, served: s.ServedStack, tmp_path: Path) -> Iterator[tuple[int, list[str]]]:
    """The image's ENTRYPOINT + CMD (port changed), run from the fresh venv against the served model."""
    final = [i for i in s.dockerfile_instructions(s.DOCKER_DIR / "explain-api.Dockerfile") if i.stage == 1]
    entrypoint = s.exec_form(next(i.args for i in final if i.keyword == "ENTRYPOINT"))
    cmd = s.exec_form(next(i.args for i in final if i.keyword == "CMD"))
    healthcheck = s.exec_form(next(i.args for i in final if i.keyword == "HEALTHCHECK").split(" CMD ", 1)[1])
    port = s.free_port()
    cmd = [str(port) if arg == "8080" else arg for arg in cmd]
    cmd[cmd.index("0.0.0.0")] = "127.0.0.1"
    healthcheck = [arg.replace(":8080/", f":{port}/") for arg in healthcheck]
    env = {**_clean_env(api_venv), "SERVING_ADDRESS": f"127.0.0.1:{served.grpc_port}",
           "GLIMPSE_DEFAULT_MODEL": s.MODEL_NAME}
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*entrypoint, *cmd], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        s.wait_until(lambda: s.http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 60, "/healthz", process, log)
        yield port, healthcheck
    finally:
        code = s.stop_process(process)
        assert code == 0, log.read_text()[-3000:]


@pytest.mark.slow
@pytest.mark.integration
def test_api_image_entrypoint_serves_predictions_and_explanations(
    api_process: tuple[int, list[str]], api_venv: Path
) -> None:
    from PIL import Image

    port, healthcheck = api_process
    base = f"http://127.0.0.1:{port}"
    check = subprocess.run(healthcheck, env=_clean_env(api_venv), capture_output=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr
    s.wait_until(lambda: s.http_get(f"{base}/readyz")[0] == 200, 60, "/readyz")
    body = json.dumps({"image": {"b64": base64.b64encode(s.photo_png("coffee")).decode()}}).encode()
    request = urllib.request.Request(f"{base}/v1/models/{s.MODEL_NAME}:predict", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        result = json.load(response)
    scores = [p["score"] for p in result["results"][0]["predictions"]]
    assert len(scores) == 3 and abs(sum(scores) - 1.0) < 1e-3
    request = urllib.request.Request(f"{base}/v1/models/{s.MODEL_NAME}:explain?method=gradcam",
                                     data=s.photo_png("chelsea", 96),
                                     headers={"Content-Type": "image/png", "Accept": "image/png"})
    with urllib.request.urlopen(request, timeout=60) as response:
        overlay = Image.open(io.BytesIO(response.read()))
    assert overlay.format == "PNG" and overlay.size == (96, 96)
    code, text = s.http_get(f"{base}/metrics")
    assert code == 200 and b"glimpse_api_requests_total" in text
